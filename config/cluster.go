package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/forkd/forkd/jobs"
)

// Defaults and limits of the [cluster] table.
const (
	// DefaultClusterPrefix is cluster.prefix's default.
	DefaultClusterPrefix = "/forkd"
	// DefaultLeaseTTL is cluster.lease_ttl's default.
	DefaultLeaseTTL = 10 * time.Second
	// MinLeaseTTL is the shortest lease etcd grants (its minimum TTL with
	// its default heartbeat and election ticks).
	MinLeaseTTL = 2 * time.Second
)

// Cluster is the [cluster] table: the etcd cluster through which the jobs
// with scope = "cluster" of every forkd that shares Name run once across
// them (package cluster).
//
//	[cluster]
//	endpoints = ["http://127.0.0.1:2379"]
//	name = "shop"
//	prefix = "/forkd"
//	lease_ttl = "10s"
//	stop_margin = "5s"
//	ca = "/etc/forkd/etcd-ca.pem"
//	cert = "/etc/forkd/etcd.pem"
//	key = "/etc/forkd/etcd-key.pem"
type Cluster struct {
	// Endpoints are etcd's client URLs (http:// or https://); required
	// when a job has scope = "cluster".
	Endpoints []string `toml:"endpoints"`
	// Name groups the instances that share their cluster jobs: the same
	// name, the same jobs. "" (the default): server.name; see Config.ClusterName.
	Name string `toml:"name"`
	// Prefix is where forkd's keys live in etcd. "" (the default):
	// DefaultClusterPrefix.
	Prefix string `toml:"prefix"`
	// LeaseTTL is the lease of each forkd's etcd session: how long a
	// holder that stopped renewing it (dead, partitioned, etcd away)
	// keeps its jobs from the others. Whole seconds, at least MinLeaseTTL;
	// 0 (the default): DefaultLeaseTTL (see Lease).
	LeaseTTL Duration `toml:"lease_ttl"`
	// StopMargin is how long before its lease could expire a holder that
	// has not renewed it stops its cluster singletons: TERM at last
	// renewal + LeaseTTL − StopMargin, KILL half the margin later, so the
	// process is gone half a margin before anyone else can win. Less than
	// LeaseTTL; 0 (the default): half of LeaseTTL (see Margin).
	StopMargin Duration `toml:"stop_margin"`
	// CA is a PEM file of the certificates that sign etcd's; setting it
	// (or Cert and Key) makes the connection TLS. Optional.
	CA string `toml:"ca"`
	// Cert and Key are the client's certificate and key (PEM), for etcd's
	// --client-cert-auth; both or neither.
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Scope says across what a [[singleton]] or [[schedule]] runs once.
type Scope string

// Scopes.
const (
	// ScopeInstance runs the job once per forkd instance (the default).
	ScopeInstance Scope = "instance"
	// ScopeCluster runs it once across the instances that share
	// cluster.name, elected through etcd.
	ScopeCluster Scope = "cluster"
)

// Valid reports whether s is a known scope ("" is ScopeInstance).
func (s Scope) Valid() bool { return s == "" || s == ScopeInstance || s == ScopeCluster }

// Enabled reports whether the cluster has endpoints to reach.
func (c *Cluster) Enabled() bool { return len(c.Endpoints) > 0 }

// TLS returns the client TLS config of c's ca, cert and key files, or nil
// when none is set (plain connections).
func (c *Cluster) TLS() (*tls.Config, error) {
	if c.CA == "" && c.Cert == "" && c.Key == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("cluster.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster.ca: %s holds no PEM certificate", c.CA)
		}
		tc.RootCAs = pool
	}
	if c.Cert != "" || c.Key != "" {
		if c.Cert == "" || c.Key == "" {
			return nil, errors.New("cluster.cert and cluster.key: set both or neither")
		}
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("cluster.cert and cluster.key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// HasClusterJobs reports whether c has a singleton or a schedule with
// scope = "cluster".
func (c *Config) HasClusterJobs() bool {
	for _, s := range c.Singletons {
		if s.Scope == ScopeCluster {
			return true
		}
	}
	for _, s := range c.Schedules {
		if s.Scope == ScopeCluster {
			return true
		}
	}
	return false
}

// ClusterName returns cluster.name, or server.name when it is not set.
func (c *Config) ClusterName() string {
	if c.Cluster.Name != "" {
		return c.Cluster.Name
	}
	return c.Server.Name
}

// KeyPrefix returns cluster.prefix, or DefaultClusterPrefix when it is
// not set.
func (c *Cluster) KeyPrefix() string {
	if c.Prefix != "" {
		return c.Prefix
	}
	return DefaultClusterPrefix
}

// Lease returns cluster.lease_ttl, or DefaultLeaseTTL when it is not set.
func (c *Cluster) Lease() time.Duration {
	if c.LeaseTTL.Duration > 0 {
		return c.LeaseTTL.Duration
	}
	return DefaultLeaseTTL
}

// Margin returns cluster.stop_margin, or half of Lease when it is not
// set.
func (c *Cluster) Margin() time.Duration {
	if c.StopMargin.Duration > 0 {
		return c.StopMargin.Duration
	}
	return c.Lease() / 2
}

// validateCluster checks the [cluster] table and the jobs' scope.
func (d *document) validateCluster(c *Config) {
	cl := &c.Cluster
	firstCluster := ""
	checkScope := func(base string, s Scope) {
		key := base + ".scope"
		switch {
		case !s.Valid():
			d.fail(key, "must be %q or %q, got %q", ScopeInstance, ScopeCluster, s)
		case s == ScopeCluster && firstCluster == "":
			firstCluster = key
		}
	}
	for i, s := range c.Singletons {
		checkScope(keyIndex("singleton", i), s.Scope)
	}
	for i, s := range c.Schedules {
		checkScope(keyIndex("schedule", i), s.Scope)
	}
	if firstCluster != "" && len(cl.Endpoints) == 0 {
		d.fail(firstCluster, `scope = "cluster" needs etcd: set [cluster] endpoints, e.g. endpoints = ["http://127.0.0.1:2379"]`)
	}
	for i, ep := range cl.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			d.fail(fmt.Sprintf("cluster.endpoints[%d]", i), "%v", err)
		}
	}
	if d.present("cluster.name") && !validName(cl.Name) {
		d.fail("cluster.name", "must be 1 to %d characters of A-Z a-z 0-9 _ . @ -, got %q", maxNameLen, cl.Name)
	}
	if p := cl.KeyPrefix(); !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		d.fail("cluster.prefix", `must start with "/" and not end with one, got %q`, cl.Prefix)
	}
	ttl := cl.Lease()
	switch {
	case d.isBad("cluster.lease_ttl"):
	case ttl < MinLeaseTTL:
		d.fail("cluster.lease_ttl", "must be at least %v (etcd's shortest lease), got %v", MinLeaseTTL, ttl)
	case ttl%time.Second != 0:
		d.fail("cluster.lease_ttl", "must be whole seconds (etcd leases count seconds), got %v", ttl)
	case !d.isBad("cluster.stop_margin") && cl.Margin() >= ttl:
		d.fail("cluster.stop_margin", "must be less than lease_ttl (%v), got %v", ttl, cl.Margin())
	}
	switch {
	case cl.Cert != "" && cl.Key == "":
		d.fail("cluster.cert", "needs cluster.key, the certificate's private key")
	case cl.Key != "" && cl.Cert == "":
		d.fail("cluster.key", "needs cluster.cert, the certificate it is the key of")
	default:
		d.validateClusterTLS(cl)
	}
}

// validateClusterTLS loads cl's TLS files and reports each that cannot be
// used at its key.
func (d *document) validateClusterTLS(cl *Cluster) {
	if cl.CA != "" {
		if _, err := (&Cluster{CA: cl.CA}).TLS(); err != nil {
			d.fail("cluster.ca", "%v", strings.TrimPrefix(err.Error(), "cluster.ca: "))
		}
	}
	if cl.Cert != "" && cl.Key != "" {
		if _, err := os.ReadFile(cl.Key); err != nil {
			d.fail("cluster.key", "%v", err)
			return
		}
		if _, err := (&Cluster{Cert: cl.Cert, Key: cl.Key}).TLS(); err != nil {
			d.fail("cluster.cert", "%v", strings.TrimPrefix(err.Error(), "cluster.cert and cluster.key: "))
		}
	}
}

// checkEndpoint reports what is wrong with an etcd endpoint URL.
func checkEndpoint(ep string) error {
	u, err := url.Parse(ep)
	switch {
	case err != nil || u.Scheme == "" || u.Host == "":
		return fmt.Errorf(`invalid etcd endpoint %q: want a URL such as "http://127.0.0.1:2379"`, ep)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("invalid etcd endpoint %q: the scheme must be http or https", ep)
	case u.Port() == "":
		return fmt.Errorf("invalid etcd endpoint %q: the port is missing (etcd's is 2379)", ep)
	case u.Path != "" && u.Path != "/":
		return fmt.Errorf("invalid etcd endpoint %q: it has a path", ep)
	}
	return nil
}

// clusterVars are the variables a cluster singleton gets from forkd.
var clusterVars = map[string]string{jobs.EnvFencingToken: "the cluster singleton's fencing token"}
