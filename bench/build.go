package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build builds the main package pkg of the module at root (a path relative
// to root: "./cmd/forkd", "./bench/cmd/bench-worker") into the binary out,
// with CGO_ENABLED=0 as make build does, using the go command on PATH or
// else $GOROOT/bin/go. The error carries the command and its output.
func Build(root, pkg, out string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.Command(goCmd, "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if outp, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s (CGO_ENABLED=0 go build -o %s %s in %s): %w\n%s", pkg, out, pkg, root, err, outp)
	}
	return nil
}

// ModuleRoot returns the nearest directory at or above dir holding go.mod.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("find the module root above %s: no go.mod", dir)
		}
	}
}
