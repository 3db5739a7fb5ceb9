package bench

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/forkd/forkd/bench/benchworker"
)

// Spec describes a master to start: the same shape for forkd and Gunicorn.
type Spec struct {
	// Workers is the number of workers.
	Workers int
	// Timeout is the worker heartbeat timeout; 0 turns heartbeats off.
	Timeout time.Duration
	// BootTimeout is forkd's boot_timeout (0 = 30s). Gunicorn has none.
	BootTimeout time.Duration
	// Command is forkd's worker program (absolute path).
	Command string
	// Args are the worker program's arguments.
	Args []string
	// Ready is forkd's readiness mode: "notify" (default) or "started".
	Ready string
	// Env is added to forkd's workers' environment ([worker.env]) and to
	// Gunicorn's (its workers inherit it).
	Env map[string]string
	// MaxRequests is forkd's [server] max_requests (0 = none).
	MaxRequests int
	// MaxBooting is forkd's [server] max_booting (0 = paced by the CPUs).
	MaxBooting int
	// MasterSlice is forkd's [server] master_slice ("" = its default).
	MasterSlice string
	// Bus is forkd's --bus address; "" means "none" (no D-Bus).
	Bus string
	// Autoscale is the body of forkd's [server.autoscale] table (TOML
	// key-value lines); "" means no autoscaling.
	Autoscale string
}

// Master is a running master, forkd or Gunicorn, with the port it serves
// on, its probe inbox (BENCH_PROBE of its workers) and its notify inbox (its
// own NOTIFY_SOCKET).
type Master struct {
	*Process
	// Name is "forkd" or "Gunicorn".
	Name string
	// Port is the TCP port on 127.0.0.1 it serves.
	Port int
	// Probe receives the workers' probe events; Notify the master's
	// sd_notify messages.
	Probe, Notify *Inbox

	dir string
	// others are the lone workers after the first (StartLone).
	others    []*Process
	closeOnce sync.Once
	closeErr  error
}

// StartForkd starts forkd (the binary at forkd) with spec written as its
// TOML config, --bus spec.Bus (default none), on a free port.
func StartForkd(forkd string, spec Spec) (*Master, error) {
	m, err := newMaster("forkd")
	if err != nil {
		return nil, err
	}
	if err := m.startForkd(forkd, spec.TOML(m.Port, m.Probe.Path()), spec.Bus, nil, ""); err != nil {
		return nil, err
	}
	return m, nil
}

// TOML returns spec as forkd's config: serving on 127.0.0.1:port, the
// workers reporting to the probe socket at probe. The last table is
// [worker.env]: more tables ([[schedule]]…) may follow.
func (spec Spec) TOML(port int, probe string) string {
	ready := spec.Ready
	if ready == "" {
		ready = "notify"
	}
	boot := spec.BootTimeout
	if boot == 0 {
		boot = 30 * time.Second
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[server]\nname = \"bench\"\nworkers = %d\nbind = [\"tcp://127.0.0.1:%d\"]\n", spec.Workers, port)
	fmt.Fprintf(&b, "timeout = %q\ngraceful_timeout = \"5s\"\nboot_timeout = %q\nkill_timeout = \"5s\"\n",
		spec.Timeout.String(), boot.String())
	if spec.MaxRequests > 0 {
		fmt.Fprintf(&b, "max_requests = %d\n", spec.MaxRequests)
	}
	if spec.MaxBooting > 0 {
		fmt.Fprintf(&b, "max_booting = %d\n", spec.MaxBooting)
	}
	if spec.MasterSlice != "" {
		fmt.Fprintf(&b, "master_slice = %q\n", spec.MasterSlice)
	}
	if spec.Autoscale != "" {
		fmt.Fprintf(&b, "\n[server.autoscale]\n%s\n", strings.TrimSpace(spec.Autoscale))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "[worker]\ncommand = %q\nargs = [", spec.Command)
	for i, a := range spec.Args {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", a)
	}
	fmt.Fprintf(&b, "]\nready = %q\n\n[worker.env]\n%s = %q\n", ready, benchworker.EnvProbe, probe)
	for k, v := range spec.Env {
		fmt.Fprintf(&b, "%s = %q\n", k, v)
	}
	return b.String()
}

// StartForkdWith starts forkd (the binary at forkd) on a free port, without
// D-Bus, with the config config returns for the master (whose Port, Probe
// and Dir are set), env ("KEY=VALUE") added to its environment and dir as
// its working directory ("" = ours).
func StartForkdWith(forkd string, config func(m *Master) string, env []string, dir string) (*Master, error) {
	m, err := newMaster("forkd")
	if err != nil {
		return nil, err
	}
	if err := m.startForkd(forkd, config(m), "", env, dir); err != nil {
		return nil, err
	}
	return m, nil
}

// startForkd writes cfg into m's directory and starts forkd with it and
// --bus bus ("" = none); on failure it closes m.
func (m *Master) startForkd(forkd, cfg, bus string, env []string, dir string) error {
	path := filepath.Join(m.dir, "bench.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		m.Close()
		return fmt.Errorf("write forkd config: %w", err)
	}
	if bus == "" {
		bus = "none"
	}
	p, err := Start([]string{forkd, "--config", path, "--bus", bus}, append(m.env(), env...), dir)
	if err != nil {
		m.Close()
		return err
	}
	m.Process = p
	return nil
}

// StartGunicornWith starts gunicorn with the arguments args returns for
// the master (whose Port, Probe and Dir are set; without the program
// itself), env added to its environment and dir as its working directory
// ("" = ours).
func StartGunicornWith(gunicorn string, args func(m *Master) []string, env []string, dir string) (*Master, error) {
	m, err := newMaster("Gunicorn")
	if err != nil {
		return nil, err
	}
	env = append(append(m.env(), "PYTHONDONTWRITEBYTECODE=1"), env...)
	p, err := Start(append([]string{gunicorn}, args(m)...), env, dir)
	if err != nil {
		m.Close()
		return nil, err
	}
	m.Process = p
	return m, nil
}

// StartGunicorn starts gunicorn (the program at gunicorn) with the sync
// worker class, benchDir's gunicorn.conf.py and app.py, spec.Workers
// workers and spec.Timeout (whole seconds) on a free port, with spec.Env
// added to its environment.
func StartGunicorn(gunicorn, benchDir string, spec Spec) (*Master, error) {
	m, err := newMaster("Gunicorn")
	if err != nil {
		return nil, err
	}
	argv := []string{gunicorn,
		"--config", filepath.Join(benchDir, "gunicorn.conf.py"),
		"--chdir", benchDir,
		"--workers", fmt.Sprint(spec.Workers),
		"--bind", fmt.Sprintf("127.0.0.1:%d", m.Port),
		"--timeout", fmt.Sprint(int(spec.Timeout / time.Second)),
		"app:app"}
	env := append(m.env(), benchworker.EnvProbe+"="+m.Probe.Path(), "PYTHONDONTWRITEBYTECODE=1")
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	p, err := Start(argv, env, "")
	if err != nil {
		m.Close()
		return nil, err
	}
	m.Process = p
	return m, nil
}

// Dir returns the master's temporary directory, removed by Close.
func (m *Master) Dir() string { return m.dir }

// newMaster makes the temporary directory, the inboxes and the port.
func newMaster(name string) (*Master, error) {
	port, err := FreePort(20000, 29999)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "forkd-bench-")
	if err != nil {
		return nil, fmt.Errorf("make %s's directory: %w", name, err)
	}
	m := &Master{Name: name, Port: port, dir: dir}
	if m.Probe, err = ListenInbox(filepath.Join(dir, "probe.sock")); err != nil {
		m.Close()
		return nil, err
	}
	if m.Notify, err = ListenInbox(filepath.Join(dir, "notify.sock")); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// env is the master's environment: ours without anything that would
// confuse it, with NOTIFY_SOCKET pointing at the notify inbox.
func (m *Master) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "NOTIFY_SOCKET", strings.HasPrefix(k, "LISTEN_"), strings.HasPrefix(k, "WATCHDOG_"),
			strings.HasPrefix(k, "BENCH_"), strings.HasPrefix(k, "FORKD_"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NOTIFY_SOCKET="+m.Notify.Path())
}

// WaitReady waits until n distinct workers have sent "ready" since the
// master started, failing early when the master exits. It returns all probe
// events received so far.
func (m *Master) WaitReady(n int, timeout time.Duration) ([]Event, error) {
	evs, err := m.Probe.WaitEvents(timeout, fmt.Sprintf("%d %s workers ready", n, m.Name), func(evs []Event) bool {
		return m.Err() != nil || len(ReadyPIDs(evs)) >= n
	})
	if err == nil {
		err = m.Err()
	}
	return evs, err
}

// Get fetches http://127.0.0.1:PORT/path and returns the body; a status
// other than 200 is an error.
func (m *Master) Get(path string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", m.Port, path))
	if err != nil {
		return "", fmt.Errorf("GET %s from %s: %w", path, m.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s from %s: %w", path, m.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s from %s: %s", path, m.Name, resp.Status)
	}
	return string(body), nil
}

// Close stops the master and everything it started (see Process.Stop, with
// a 20 s grace period), closes the inboxes and removes the directory. It is
// idempotent: later calls return the first one's result.
func (m *Master) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Master) close() error {
	var errs []error
	if m.Process != nil {
		errs = append(errs, m.Stop(20*time.Second))
	}
	errs = append(errs, m.stopOthers(20*time.Second))
	if m.Probe != nil {
		m.Probe.Close()
	}
	if m.Notify != nil {
		m.Notify.Close()
	}
	errs = append(errs, os.RemoveAll(m.dir))
	return errors.Join(errs...)
}

// ReadyPIDs returns the pids that sent "ready" among evs, in order, each
// once, with when each did.
func ReadyPIDs(evs []Event) map[int]time.Time {
	out := map[int]time.Time{}
	for _, ev := range evs {
		if _, seen := out[ev.PID]; ev.Kind == benchworker.KindReady && !seen {
			out[ev.PID] = ev.At
		}
	}
	return out
}

// LastReady is when the last of the workers ready in evs sent "ready"
// (zero when none did).
func LastReady(evs []Event) time.Time {
	var last time.Time
	for _, at := range ReadyPIDs(evs) {
		if at.After(last) {
			last = at
		}
	}
	return last
}
