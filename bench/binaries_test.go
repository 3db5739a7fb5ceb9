package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// binDir is where the tests and benchmarks build the programs they run.
const binDir = "/tmp/forkd-bench"

// The programs the tests and benchmarks build: forkd, the bench worker
// forkd runs (and the benchmark times alone), go-start, the Go runtime's
// start with forkd's packages (scenario 1), bench-run, the schedule
// run of scenario 12, and the demo worker and the SDK worker of the
// keep-alive scenarios 14 and 15.
var (
	forkdBinary     = &binary{pkg: "./cmd/forkd", path: filepath.Join(binDir, "forkd")}
	clusterBinary   = &binary{pkg: "./cmd/forkd-cluster", path: filepath.Join(binDir, "forkd-cluster")}
	metricsBinary   = &binary{pkg: "./cmd/forkd-metrics", path: filepath.Join(binDir, "forkd-metrics")}
	workerBinary    = &binary{pkg: "./bench/cmd/bench-worker", path: filepath.Join(binDir, "bench-worker")}
	goStartBinary   = &binary{pkg: "./bench/cmd/go-start", path: filepath.Join(binDir, "go-start")}
	runBinary       = &binary{pkg: "./bench/cmd/bench-run", path: filepath.Join(binDir, "bench-run")}
	demoBinary      = &binary{pkg: "./examples/demo", path: filepath.Join(binDir, "forkd-demo")}
	sdkWorkerBinary = &binary{pkg: "./bench/cmd/sdk-worker", path: filepath.Join(binDir, "sdk-worker")}
)

// binary is a main package of the module, built once per run of the test
// binary.
type binary struct {
	pkg  string // relative to the module root
	path string // where it is built

	once sync.Once
	err  error
}

// build builds b on its first call and returns its path; every call
// returns the error of that one build.
func (b *binary) build() (string, error) {
	b.once.Do(func() {
		root, err := ModuleRoot(".")
		if err != nil {
			b.err = err
			return
		}
		if err := os.MkdirAll(filepath.Dir(b.path), 0o755); err != nil {
			b.err = fmt.Errorf("make %s: %w", filepath.Dir(b.path), err)
			return
		}
		b.err = Build(root, b.pkg, b.path)
	})
	return b.path, b.err
}

// benchWorker returns the bench worker's path, building it on first use;
// it fails t when the worker cannot be built.
func benchWorker(t testing.TB) string {
	t.Helper()
	path, err := workerBinary.build()
	if err != nil {
		t.Fatal(err)
	}
	return path
}
