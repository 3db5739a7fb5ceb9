package examples_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExamples_Serve runs forkd, built from this tree, with each example
// config (its bind moved to a free port) and checks that every worker
// answers HTTP and that TERM stops it cleanly.
func TestExamples_Serve(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	goBuild(t, root, filepath.Join(bin, "forkd"), "./cmd/forkd")
	goBuild(t, root, filepath.Join(bin, "forkd-demo"), "./examples/demo")

	t.Run("demo", func(t *testing.T) {
		cfg := rewrite(t, filepath.Join(root, "examples/demo.toml"), map[string]string{
			`"./bin/forkd-demo"`: strconv.Quote(filepath.Join(bin, "forkd-demo")),
		})
		serve(t, filepath.Join(bin, "forkd"), root, cfg, 4, "hello from worker")
	})
	t.Run("fastapi", func(t *testing.T) {
		skipWithoutPython(t, "uvicorn", "fastapi")
		cfg := rewrite(t, filepath.Join(root, "examples/fastapi/forkd.toml"), map[string]string{
			`"examples/fastapi"`: strconv.Quote(filepath.Join(root, "examples/fastapi")),
		})
		serve(t, filepath.Join(bin, "forkd"), root, cfg, 2, `"worker_id"`)
	})
	t.Run("fastapi-scheduler", func(t *testing.T) {
		skipWithoutPython(t, "uvicorn", "fastapi", "apscheduler")
		cfg := rewrite(t, filepath.Join(root, "examples/fastapi-scheduler/forkd.toml"), map[string]string{
			`"examples/fastapi-scheduler"`: strconv.Quote(filepath.Join(root, "examples/fastapi-scheduler")),
		})
		serve(t, filepath.Join(bin, "forkd"), root, cfg, 4, `"worker_id"`)
	})
}

// goBuild builds the package pkg of the repository at root into out.
func goBuild(t *testing.T, root, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// skipWithoutPython skips t unless Debian's /usr/bin/python3 imports every
// one of modules, naming the Debian packages that provide them.
func skipWithoutPython(t *testing.T, modules ...string) {
	t.Helper()
	err := exec.Command("/usr/bin/python3", "-c", "import "+strings.Join(modules, ", ")).Run()
	if err == nil {
		return
	}
	pkgs := make([]string, len(modules))
	for i, m := range modules {
		pkgs[i] = "python3-" + m
	}
	t.Skipf("Debian's /usr/bin/python3 cannot import %s (%v): apt-get install -y %s",
		strings.Join(modules, ", "), err, strings.Join(pkgs, " "))
}

// rewrite copies the config at path into a temp file, with its bind on a
// free port and the given replacements made.
func rewrite(t *testing.T, path string, repl map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, new := range repl {
		if !strings.Contains(s, old) {
			t.Fatalf("%s does not contain %s", path, old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "bind = ") {
			line = `bind = ["tcp://` + addr + `"]`
		}
		out = append(out, line)
	}
	cfg := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(cfg, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serve runs forkd with cfg until n distinct worker pids have answered
// with a body containing want, then stops it with TERM.
func serve(t *testing.T, forkd, dir, cfg string, n int, want string) {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := ""
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, `bind = ["tcp://`) {
			addr = strings.TrimSuffix(strings.TrimPrefix(line, `bind = ["tcp://`), `"]`)
		}
	}
	cmd := exec.Command(forkd, "--config", cfg, "--bus", "none")
	cmd.Dir = dir
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("forkd output:\n%s", log.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	pids := map[string]bool{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(pids) < n {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d workers answered within 30s: %v", len(pids), n, pids)
		case err := <-done:
			done <- err
			t.Fatalf("forkd exited early: %v", err)
		case <-tick.C:
		}
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			continue // not listening or not ready yet
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("GET / = %d %q, want 200 with %q", resp.StatusCode, body, want)
		}
		pids[pidIn(string(body))] = true
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("forkd after TERM: %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("forkd did not stop within 20s of TERM")
	}
}

// pidIn finds the worker's pid in an answer: "pid 123" (the demo) or
// "pid": 123 (the FastAPI app).
func pidIn(body string) string {
	f := strings.FieldsFunc(body, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z') })
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "pid" {
			return f[i+1]
		}
	}
	return body
}
