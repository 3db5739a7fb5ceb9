package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse_cluster(t *testing.T) {
	data := []byte(`[server]
name = "web1"

[worker]
command = "/bin/sh"

[cluster]
endpoints = ["http://10.0.0.5:2379", "https://etcd.example:2379"]
lease_ttl = "4s"

[[singleton]]
name = "scheduler"
command = "/bin/true"
scope = "cluster"

[[schedule]]
name = "cleanup"
every = "1m"
command = "/bin/true"
scope = "cluster"
persistent = true

[[schedule]]
name = "local"
every = "1m"
command = "/bin/true"
`)
	t.Setenv("STATE_DIRECTORY", "")
	c, err := Parse("web1.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled() || len(cl.Endpoints) != 2 || c.ClusterName() != "web1" || cl.KeyPrefix() != "/forkd" {
		t.Errorf("cluster %+v: name %q, prefix %q", cl, c.ClusterName(), cl.KeyPrefix())
	}
	if cl.Lease() != 4*time.Second || cl.Margin() != 2*time.Second {
		t.Errorf("lease %v, margin %v; want 4s and half of it", cl.Lease(), cl.Margin())
	}
	if !c.HasClusterJobs() || c.Singletons[0].Scope != ScopeCluster || c.Schedules[0].Scope != ScopeCluster ||
		c.Schedules[1].Scope != "" {
		t.Errorf("scopes %q %q %q", c.Singletons[0].Scope, c.Schedules[0].Scope, c.Schedules[1].Scope)
	}
	if tc, err := cl.TLS(); tc != nil || err != nil {
		t.Errorf("TLS() = %v, %v; want none without ca, cert, key", tc, err)
	}
}

// writeCert writes a self-signed certificate and its key as PEM files in
// dir and returns their paths.
func writeCert(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestParse_clusterTLS: usable ca, cert and key load; a key that is not
// the certificate's is an error at cluster.cert.
func TestParse_clusterTLS(t *testing.T) {
	dir := t.TempDir()
	ca, _ := writeCert(t, dir, "ca")
	cert, key := writeCert(t, dir, "client")
	_, otherKey := writeCert(t, dir, "other")
	table := func(key string) []byte {
		return fmt.Appendf(nil, "[worker]\ncommand = \"/bin/sh\"\n\n[cluster]\nendpoints = [\"https://127.0.0.1:2379\"]\nca = %q\ncert = %q\nkey = %q\n",
			ca, cert, key)
	}
	c, err := Parse("tls.toml", table(key))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.Cluster.TLS()
	if err != nil || tc == nil || tc.RootCAs == nil || len(tc.Certificates) != 1 {
		t.Fatalf("TLS() = %+v, %v; want the CA and one certificate", tc, err)
	}
	_, err = Parse("tls.toml", table(otherKey))
	if err == nil || !strings.Contains(err.Error(), "tls.toml:7:8: cluster.cert: ") ||
		!strings.Contains(err.Error(), "private key does not match public key") {
		t.Fatalf("a key that is not the certificate's: %v", err)
	}
}
