// x509interop reads the certificates and CRLs fleetguard made (a JSON request on stdin) and reports,
// for each, whether Go's standard library parses it and, where asked, verifies it: the chain to the
// given roots with the given extended key usages (crypto/x509 Certificate.Verify), the expected
// extended key usage OIDs, name constraints, CRL distribution points and CRL signatures and entries.
// A Go-based hub or verifier (AWS IoT's SDKs, many MQTT brokers, step-ca) sees exactly this.
// Standard library only, so it builds offline. Driven by test/interop/go-x509.test.ts.
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"
)

type request struct {
	Now   time.Time `json:"now"`
	Cases []item    `json:"cases"`
}

// item is one artifact: a certificate (kind "cert") or a CRL (kind "crl").
type item struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Pem  string `json:"pem"`
	// for certificates: verify a path to Roots through Intermediates (names of other items)
	Roots         []string `json:"roots,omitempty"`
	Intermediates []string `json:"intermediates,omitempty"`
	// extended key usages the chain must allow: clientAuth, serverAuth, any
	Usages []string `json:"usages,omitempty"`
	// OIDs that must appear in the certificate's extended key usage (as parsed by Go)
	WantEkuOids []string `json:"wantEkuOids,omitempty"`
	WantCA      *bool    `json:"wantCA,omitempty"`
	WantMaxPath *int     `json:"wantMaxPathLen,omitempty"`
	// dNSName subtrees Go must read from a critical nameConstraints extension
	WantPermittedDNS []string `json:"wantPermittedDNS,omitempty"`
	WantCrlDP        []string `json:"wantCrlDistributionPoints,omitempty"`
	// for CRLs: the issuing certificate (an item name), the revoked serials (hex) and the cRLNumber
	Issuer      string   `json:"issuer,omitempty"`
	WantRevoked []string `json:"wantRevoked,omitempty"`
	WantNumber  *int64   `json:"wantNumber,omitempty"`
}

type result struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func decode(p, label string) ([]byte, error) {
	b, _ := pem.Decode([]byte(p))
	if b == nil || b.Type != label {
		return nil, fmt.Errorf("want one PEM block %q", label)
	}
	return b.Bytes, nil
}

var usageNames = map[string]x509.ExtKeyUsage{
	"any":        x509.ExtKeyUsageAny,
	"clientAuth": x509.ExtKeyUsageClientAuth,
	"serverAuth": x509.ExtKeyUsageServerAuth,
}

func ekuOids(c *x509.Certificate) []string {
	known := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny:         "2.5.29.37.0",
		x509.ExtKeyUsageServerAuth:  "1.3.6.1.5.5.7.3.1",
		x509.ExtKeyUsageClientAuth:  "1.3.6.1.5.5.7.3.2",
		x509.ExtKeyUsageCodeSigning: "1.3.6.1.5.5.7.3.3",
	}
	var out []string
	for _, u := range c.ExtKeyUsage {
		out = append(out, known[u])
	}
	for _, o := range c.UnknownExtKeyUsage {
		out = append(out, o.String())
	}
	return out
}

func checkCert(it item, certs map[string]*x509.Certificate, now time.Time) error {
	c := certs[it.Name]
	if it.WantCA != nil && c.IsCA != *it.WantCA {
		return fmt.Errorf("IsCA: got %v, want %v", c.IsCA, *it.WantCA)
	}
	if it.WantMaxPath != nil && (c.MaxPathLen != *it.WantMaxPath || (*it.WantMaxPath == 0 && !c.MaxPathLenZero)) {
		return fmt.Errorf("MaxPathLen: got %d, want %d", c.MaxPathLen, *it.WantMaxPath)
	}
	if it.WantPermittedDNS != nil {
		if !c.PermittedDNSDomainsCritical || !slices.Equal(c.PermittedDNSDomains, it.WantPermittedDNS) {
			return fmt.Errorf("nameConstraints: got critical=%v permitted %v, want critical %v",
				c.PermittedDNSDomainsCritical, c.PermittedDNSDomains, it.WantPermittedDNS)
		}
	}
	if it.WantCrlDP != nil && !slices.Equal(c.CRLDistributionPoints, it.WantCrlDP) {
		return fmt.Errorf("CRLDistributionPoints: got %v, want %v", c.CRLDistributionPoints, it.WantCrlDP)
	}
	got := ekuOids(c)
	for _, o := range it.WantEkuOids {
		if !slices.Contains(got, o) {
			return fmt.Errorf("extKeyUsage: got %v, want %s among them", got, o)
		}
	}
	if len(it.Roots) == 0 {
		return nil
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now}
	for _, r := range it.Roots {
		opts.Roots.AddCert(certs[r])
	}
	for _, r := range it.Intermediates {
		opts.Intermediates.AddCert(certs[r])
	}
	for _, u := range it.Usages {
		k, ok := usageNames[u]
		if !ok {
			return fmt.Errorf("usages: got %q, want clientAuth, serverAuth or any", u)
		}
		opts.KeyUsages = append(opts.KeyUsages, k)
	}
	chains, err := c.Verify(opts)
	if err != nil {
		return fmt.Errorf("Verify: %w", err)
	}
	if want := 1 + len(it.Intermediates) + 1; len(chains[0]) != want {
		return fmt.Errorf("Verify: chain of %d certificates, want %d", len(chains[0]), want)
	}
	return nil
}

func checkCrl(it item, certs map[string]*x509.Certificate, now time.Time) error {
	der, err := decode(it.Pem, "X509 CRL")
	if err != nil {
		return err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("ParseRevocationList: %w", err)
	}
	issuer := certs[it.Issuer]
	if issuer == nil {
		return fmt.Errorf("issuer: got %q, want the name of a certificate item", it.Issuer)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("CheckSignatureFrom: %w", err)
	}
	if now.Before(crl.ThisUpdate) || now.After(crl.NextUpdate) {
		return fmt.Errorf("CRL window %s..%s does not hold %s", crl.ThisUpdate, crl.NextUpdate, now)
	}
	var got []string
	for _, e := range crl.RevokedCertificateEntries {
		got = append(got, strings.ToLower(e.SerialNumber.Text(16)))
	}
	want := make([]string, len(it.WantRevoked))
	for i, s := range it.WantRevoked {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok {
			return fmt.Errorf("wantRevoked[%d]: got %q, want hex", i, s)
		}
		want[i] = n.Text(16)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("revoked serials: got %v, want %v", got, want)
	}
	if it.WantNumber != nil && (crl.Number == nil || crl.Number.Int64() != *it.WantNumber) {
		return fmt.Errorf("cRLNumber: got %v, want %d", crl.Number, *it.WantNumber)
	}
	return nil
}

func run(req request) []result {
	certs := map[string]*x509.Certificate{}
	parseErr := map[string]error{}
	for _, it := range req.Cases {
		if it.Kind != "cert" {
			continue
		}
		der, err := decode(it.Pem, "CERTIFICATE")
		if err == nil {
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(der); err == nil {
				certs[it.Name] = c
			}
		}
		if err != nil {
			parseErr[it.Name] = fmt.Errorf("ParseCertificate: %w", err)
		}
	}
	var out []result
	for _, it := range req.Cases {
		var err error
		switch {
		case parseErr[it.Name] != nil:
			err = parseErr[it.Name]
		case it.Kind == "cert":
			for _, n := range append(slices.Clone(it.Roots), it.Intermediates...) {
				if certs[n] == nil {
					err = errors.Join(err, fmt.Errorf("chain certificate %q did not parse", n))
				}
			}
			if err == nil {
				err = checkCert(it, certs, req.Now)
			}
		case it.Kind == "crl":
			err = checkCrl(it, certs, req.Now)
		default:
			err = fmt.Errorf("kind: got %q, want cert or crl", it.Kind)
		}
		r := result{Name: it.Name, OK: err == nil}
		if err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "x509interop: stdin: %v\n", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(run(req)); err != nil {
		fmt.Fprintf(os.Stderr, "x509interop: stdout: %v\n", err)
		os.Exit(2)
	}
}
