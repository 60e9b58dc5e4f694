//go:build tools

// Package tools pins the Pulumi engine that scripts/setup-pulumi builds.
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
