package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps_NoEtcd: forkd links neither etcd's client nor gRPC (nor the
// zap logger they bring): those live in forkd-cluster, so that a forkd
// without cluster jobs does not run their package initialization. The
// only importers of protobuf are protobuf itself and Prometheus's client
// (TestDeps_NoPrometheus: neither is linked now).
func TestDeps_NoEtcd(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH to list forkd's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}",
		"github.com/forkd/forkd/cmd/forkd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		for _, banned := range []string{"go.etcd.io/", "google.golang.org/grpc", "go.uber.org/zap"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("forkd links %s (%s belongs in forkd-cluster only)", pkg, banned)
			}
		}
		if strings.HasPrefix(pkg, "google.golang.org/protobuf/") || strings.HasPrefix(pkg, "github.com/prometheus/") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, "google.golang.org/protobuf/") {
				t.Errorf("%s imports %s: forkd's protobuf must come from Prometheus's client alone", pkg, imp)
			}
		}
	}
}

// TestDeps_NoPrometheus: forkd links neither Prometheus's client (nor its
// procfs, common and client_model) nor protobuf: those live in
// forkd-metrics, so that the master does not pay for their size and
// package initialization, with or without a [metrics] bind.
func TestDeps_NoPrometheus(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH to list forkd's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}",
		"github.com/forkd/forkd/cmd/forkd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/prometheus/", "google.golang.org/protobuf/",
			"github.com/forkd/forkd/metrics/exporter"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("forkd links %s (%s belongs in forkd-metrics only)", pkg, banned)
			}
		}
	}
}
