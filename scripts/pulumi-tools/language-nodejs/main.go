// Command pulumi-language-nodejs is fleetguard's own, minimal Pulumi language
// host for Node.js programs.
//
// The upstream host (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs)
// is a separate Go module that the Go module mirror of this workplace does not
// serve, so we build this small replacement against github.com/pulumi/pulumi/sdk/v3.
// It implements what `pulumi up/preview/destroy/refresh` need from a language host:
// it starts the program through @pulumi/pulumi's own runner (cmd/run) with the
// flags and environment that runner reads, and reports the outcome to the engine.
// RunPlugin starts Node.js policy packs (`--policy-pack`, via cmd/run-policy-pack)
// and Node.js provider plugins (via cmd/run-plugin). GetRequiredPlugins/Packages
// report nothing. Template, RuntimeOptionsPrompts, code generation, Pack and Link
// answer Unimplemented.
//
// Invocation, as the engine does it for every plugin:
//
//	pulumi-language-nodejs [--logflow] [--logtostderr] [-v=N] [--tracing=URL] ENGINE_ADDRESS
//
// The host prints the port of its gRPC server on stdout, then serves until the
// engine goes away.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

func main() {
	if err := mainErr(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-nodejs: %v\n", err)
		os.Exit(1)
	}
}

func mainErr(argv []string) error {
	flags := flag.NewFlagSet("pulumi-language-nodejs", flag.ContinueOnError)
	// Flags the engine passes to every plugin it launches.
	tracing := flags.String("tracing", "", "emit tracing to a Zipkin-compatible tracing endpoint")
	logFlow := flags.Bool("logflow", false, "flow log settings to child processes")
	logToStderr := flags.Bool("logtostderr", false, "log to stderr")
	verbose := flags.Int("v", 0, "log verbosity")
	// Legacy runtime options, once passed as flags; Pulumi.yaml runtime.options win.
	typescript := flags.Bool("typescript", true, "run TypeScript programs through ts-node")
	tsconfig := flags.String("tsconfig", "", "path to the tsconfig.json to use")
	nodeargs := flags.String("nodeargs", "", "extra arguments for node")
	_ = flags.String("root", "", "project root directory (ignored)")
	_ = flags.String("packagemanager", "", "package manager (ignored)")
	if err := flags.Parse(argv); err != nil {
		return err
	}

	logging.InitLogging(*logToStderr, *verbose, *logFlow)

	engineAddress := ""
	if args := flags.Args(); len(args) > 0 {
		engineAddress = args[0]
	}

	// When the engine goes away, stop serving so that we never outlive it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if engineAddress != "" {
		if err := rpcutil.Healthcheck(ctx, engineAddress, 5*time.Minute, cancel); err != nil {
			return fmt.Errorf("could not start health check on the engine: %w", err)
		}
	}

	host := newHost(engineAddress, *tracing, runtimeOptions{
		typescript: *typescript,
		tsconfig:   *tsconfig,
		nodeargs:   *nodeargs,
	})

	stop := make(chan bool)
	go func() {
		<-ctx.Done()
		host.killChildren()
		close(stop)
	}()

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
		Options: rpcutil.TracingServerInterceptorOptions(nil),
	})
	if err != nil {
		return fmt.Errorf("could not start the language host RPC server: %w", err)
	}

	// The engine reads the port from our first line of output.
	fmt.Printf("%d\n", handle.Port)

	if err := <-handle.Done; err != nil {
		return fmt.Errorf("language host RPC server stopped: %w", err)
	}
	return nil
}
