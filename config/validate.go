package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/hooks"
)

// MaxWorkers is the largest worker count forkd runs: the bound on
// server.workers, server.max_surge and server.max_booting here, and at run
// time on the arbiter's scaling (SIGTTIN, the D-Bus SetWorkers method,
// forkctl scale).
const MaxWorkers = 4096

// Limits on the values.
const (
	maxBacklog = 65535
	maxNameLen = 64
)

// fail records a problem with the value of key, unless key was already
// reported as wrong while decoding.
func (d *document) fail(key, format string, args ...any) {
	if d.isBad(key) {
		return
	}
	line, col := d.at(key)
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Col: col, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// failKey records a problem with key itself (its name, not its value).
func (d *document) failKey(key, format string, args ...any) {
	if d.isBad(key) {
		return
	}
	line, col := d.keyAt(key)
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Col: col, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// validate checks c, decoded from d with the defaults applied, and settles
// Worker.Path.
func (d *document) validate(c *Config) {
	d.validateServer(&c.Server)
	d.validateWorker(&c.Worker)
	d.validateHooks(c.Hooks)
	d.validateJobs(c)
	d.validateMetrics(c)
	c.cgroupKeys = d.cgroupKeys
	d.validateCluster(c)
}

func (d *document) validateServer(s *Server) {
	if !validName(s.Name) {
		if d.present("server.name") {
			d.fail("server.name", "must be 1 to %d characters of A-Z a-z 0-9 _ . @ -, got %q", maxNameLen, s.Name)
		} else {
			d.fail("server.name", "the file name %q is not a valid instance name (1 to %d characters of A-Z a-z 0-9 _ . @ -): set server.name", s.Name, maxNameLen)
		}
	}
	workersOK := s.Workers >= s.minWorkers() && s.Workers <= MaxWorkers && !d.isBad("server.workers")
	if !workersOK {
		d.fail("server.workers", "must be between %d and %d, got %d", s.minWorkers(), MaxWorkers, s.Workers)
	}
	d.validateAutoscale(s, workersOK)
	switch {
	case s.MinReady < 0 || workersOK && s.MinReady > s.Workers:
		d.fail("server.min_ready", "must be between 0 (all workers) and workers (%d), got %d", s.Workers, s.MinReady)
	}
	if len(s.Bind) == 0 {
		d.fail("server.bind", `must list at least one address, e.g. ["tcp://127.0.0.1:8000"]`)
	}
	seen := map[string]string{}
	for i, b := range s.Bind {
		addr := b.Network + " " + b.Address
		switch b.Network {
		case "unix":
			// The same file however written: /run//a.sock, /run/./a.sock.
			addr = b.Network + " " + filepath.Clean(b.Address)
		case "tcp":
			if strings.HasSuffix(b.Address, ":0") {
				continue // each takes a port of its own
			}
		}
		if first, ok := seen[addr]; ok {
			d.fail(keyIndex("server.bind", i), "%q listens on the same address as %q", b.Raw, first)
			continue
		}
		seen[addr] = b.Raw
	}
	if s.Backlog < 1 || s.Backlog > maxBacklog {
		d.fail("server.backlog", "must be between 1 and %d, got %d", maxBacklog, s.Backlog)
	}
	if s.BootTimeout.Duration == 0 {
		d.fail("server.boot_timeout", "must be more than 0s: a worker gets this long to become ready")
	}
	if s.MaxSurge < 0 || s.MaxSurge > MaxWorkers {
		d.fail("server.max_surge", "must be between 0 (all at once) and %d, got %d", MaxWorkers, s.MaxSurge)
	}
	if s.MaxBooting < 0 || s.MaxBooting > MaxWorkers {
		d.fail("server.max_booting", "must be between 0 (paced by the CPUs) and %d, got %d", MaxWorkers, s.MaxBooting)
	}
	if s.MaxFailures < 0 {
		d.fail("server.max_failures", "must be 0 (retry forever) or more, got %d", s.MaxFailures)
	}
	if s.MaxRequests < 0 {
		d.fail("server.max_requests", "must be 0 (never recycle) or more, got %d", s.MaxRequests)
	}
	if s.MaxRequestsJitter < 0 {
		d.fail("server.max_requests_jitter", "must be 0 or more, got %d", s.MaxRequestsJitter)
	}
	if d.present("server.state_dir") {
		switch {
		case s.StateDir == "":
			d.fail("server.state_dir", "must not be empty (leave it out for none, or systemd's StateDirectory=)")
		case !filepath.IsAbs(s.StateDir):
			d.fail("server.state_dir", "must be an absolute path, got %q", s.StateDir)
		default:
			if fi, err := os.Stat(s.StateDir); err == nil && !fi.IsDir() {
				d.fail("server.state_dir", "%q is not a directory", s.StateDir)
			}
		}
	}
	if sl := s.MasterSlice.Duration; sl != 0 && (sl < MinMasterSlice || sl > MaxMasterSlice) {
		d.fail("server.master_slice", "must be 0 (the kernel's default) or between %v and %v, got %v",
			MinMasterSlice, MaxMasterSlice, sl)
	}
}

// validName reports whether name can be an instance name.
func validName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.@-", c) >= 0) {
			return false
		}
	}
	return true
}

func (d *document) validateWorker(w *Worker) {
	w.Path = d.validateProgram("worker", program{w.Command, w.Args, w.Env, w.Dir}, "every worker", WorkerVars)
	if !w.Ready.Valid() {
		d.fail("worker.ready", "must be %q or %q, got %q", ReadyNotify, ReadyStarted, w.Ready)
	} else if w.Ready == ReadyNotify && w.ReadyDelay.Duration > 0 && !d.isBad("worker.ready") {
		d.fail("worker.ready_delay", "applies only with ready = %q (this worker is ready when it sends READY=1)", ReadyStarted)
	}
	d.validateLimits("worker", &w.Limits)
}

// program is what [worker], [[singleton]] and [[schedule]] have in common:
// a command to run, with its arguments, environment and directory.
type program struct {
	command string
	args    []string
	env     map[string]string
	dir     string
}

// validateProgram checks the program p of the table at base and returns its
// command resolved (see findCommand), "" if it is wrong. reserved lists the
// variables forkd sets itself for whom ("every worker"), which env cannot
// set.
func (d *document) validateProgram(base string, p program, whom string, reserved ...map[string]string) string {
	dirOK := true
	if d.present(base + ".dir") {
		if err := checkDir(p.dir); err != nil {
			d.fail(base+".dir", "%v", err)
			dirOK = false
		}
	}
	envKeys := make([]string, 0, len(p.env))
	for k := range p.env {
		envKeys = append(envKeys, k)
	}
	sort.Strings(envKeys)
	for _, k := range envKeys {
		key := keyJoin(base+".env", k)
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			d.failKey(key, "an environment variable's name must not be empty or contain '=' or NUL")
		case strings.IndexByte(p.env[k], 0) >= 0:
			d.fail(key, "an environment variable's value must not contain NUL")
		default:
			for _, vars := range reserved {
				if what := vars[k]; what != "" {
					d.failKey(key, "forkd sets %s for %s itself (%s); it cannot be set here", k, whom, what)
					break
				}
			}
		}
	}
	for i, a := range p.args {
		if strings.IndexByte(a, 0) >= 0 {
			d.fail(keyIndex(base+".args", i), "an argument must not contain NUL")
		}
	}

	key := base + ".command"
	switch {
	case !d.present(key):
		d.fail(key, `required: the program to run, e.g. command = "/usr/bin/myapp"`)
	case p.command == "":
		d.fail(key, "must not be empty")
	case strings.IndexByte(p.command, 0) >= 0:
		d.fail(key, "must not contain NUL")
	case dirOK || !strings.Contains(p.command, "/") || filepath.IsAbs(p.command):
		path, err := findCommandIn(p.command, p.dir, p.env, base+".env")
		if err != nil {
			d.fail(key, "%v", err)
		}
		return path
	}
	return ""
}

// checkDir reports whether dir is an existing directory.
func checkDir(dir string) error {
	if dir == "" {
		return errors.New("must not be empty (leave it out to use the master's directory)")
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %q does not exist", dir)
	case err != nil:
		return fmt.Errorf("directory %q: %w", dir, errors.Unwrap(err))
	case !fi.IsDir():
		return fmt.Errorf("%q is not a directory", dir)
	}
	return nil
}

// findCommand resolves a worker command to an absolute path, as
// findCommandIn does with worker.env.
func findCommand(command, dir string, env map[string]string) (string, error) {
	return findCommandIn(command, dir, env, "worker.env")
}

// findCommandIn resolves a command to an absolute path: a name without '/'
// in PATH (env's PATH if it sets one, else the process's; relative PATH
// entries are skipped), a relative path against dir (or the current
// directory). The result must be an executable regular file. envKey names
// env in errors ("worker.env").
func findCommandIn(command, dir string, env map[string]string, envKey string) (string, error) {
	if !strings.Contains(command, "/") {
		pathList, fromEnv := env["PATH"]
		if !fromEnv {
			pathList = os.Getenv("PATH")
		}
		var notExec error
		for _, p := range filepath.SplitList(pathList) {
			if !filepath.IsAbs(p) {
				continue
			}
			candidate := filepath.Join(p, command)
			err := checkExecutable(candidate)
			if err == nil {
				return candidate, nil
			}
			if notExec == nil && !errors.Is(err, fs.ErrNotExist) {
				notExec = err
			}
		}
		where := "PATH"
		if fromEnv {
			where = envKey + "'s PATH"
		}
		if notExec != nil {
			return "", fmt.Errorf("%q not found in %s as an executable file (%v)", command, where, notExec)
		}
		return "", fmt.Errorf("%q not found in %s", command, where)
	}
	path := command
	if !filepath.IsAbs(path) {
		base := dir
		if base == "" {
			var err error
			if base, err = os.Getwd(); err != nil {
				return "", fmt.Errorf("resolve %q: %w", command, err)
			}
		}
		abs, err := filepath.Abs(filepath.Join(base, path))
		if err != nil {
			return "", fmt.Errorf("resolve %q: %w", command, err)
		}
		path = abs
	}
	path = filepath.Clean(path)
	if err := checkExecutable(path); err != nil {
		if path != command {
			return "", fmt.Errorf("%q (%s): %w", command, path, err)
		}
		return "", fmt.Errorf("%q: %w", command, err)
	}
	return path, nil
}

// checkExecutable reports whether path is a regular file this process may
// execute. A missing file gives an error matching fs.ErrNotExist.
func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errNoFile{}
	case err != nil:
		return errors.Unwrap(err)
	case fi.IsDir():
		return errors.New("is a directory, not a program")
	case !fi.Mode().IsRegular():
		return errors.New("is not a regular file")
	case fi.Mode().Perm()&0o111 == 0:
		return errors.New("is not executable (no x permission)")
	}
	if err := unix.Access(path, unix.X_OK); err != nil {
		return fmt.Errorf("is not executable: %w", err)
	}
	return nil
}

// errNoFile says a program's file does not exist; it is fs.ErrNotExist.
type errNoFile struct{}

func (errNoFile) Error() string        { return "no such file" }
func (errNoFile) Is(target error) bool { return target == fs.ErrNotExist }

// canAbort reports whether h precedes something that a failing hook
// command can stop (starting, reloading, forking a worker, re-executing).
func canAbort(h hooks.Hook) bool {
	switch h {
	case hooks.OnStarting, hooks.OnReload, hooks.PreFork, hooks.PreExec:
		return true
	}
	return false
}

func (d *document) validateHooks(hs map[string][]HookExec) {
	names := make([]string, 0, len(hs))
	for name := range hs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		hook, base := hooks.Hook(name), keyJoin("hooks", name)
		switch {
		case !hook.Valid():
			d.failKey(base, "unknown hook %q (the hooks are %s)", name, hookList(hooks.All))
			continue
		case hook == hooks.PreRequest || hook == hooks.PostRequest:
			d.failKey(base, "%s happens inside workers and cannot run commands (use the worker SDK's callbacks)", name)
			continue
		}
		for i, h := range hs[name] {
			key := keyIndex(base, i)
			switch {
			case !d.present(key + ".exec"):
				d.fail(key+".exec", `required: the command to run, e.g. exec = ["/usr/bin/logger", "%s"]`, name)
			case len(h.Exec) == 0:
				d.fail(key+".exec", "must not be empty")
			case h.Exec[0] == "":
				d.fail(keyIndex(key+".exec", 0), "the program must not be empty")
			default:
				// As the master runs it: forkd's PATH, forkd's directory.
				if _, err := findCommand(h.Exec[0], "", nil); err != nil {
					d.fail(keyIndex(key+".exec", 0), "%v", err)
				}
			}
			for j, a := range h.Exec {
				if strings.IndexByte(a, 0) >= 0 {
					d.fail(keyIndex(key+".exec", j), "must not contain NUL")
				}
			}
			if h.Timeout.Duration == 0 {
				d.fail(key+".timeout", "must be more than 0s")
			}
			switch h.OnFailure {
			case OnFailureIgnore:
			case OnFailureAbort:
				if !canAbort(hook) {
					d.fail(key+".on_failure", "%q is only possible for %s (hooks that come before what they can stop); %s can only %q", OnFailureAbort, hookList(abortableList()), name, OnFailureIgnore)
				}
			default:
				d.fail(key+".on_failure", "must be %q or %q, got %q", OnFailureIgnore, OnFailureAbort, h.OnFailure)
			}
		}
	}
}

// abortableList returns the abortable hooks in the order of hooks.All.
func abortableList() []hooks.Hook {
	var list []hooks.Hook
	for _, h := range hooks.All {
		if canAbort(h) {
			list = append(list, h)
		}
	}
	return list
}

// hookList writes hook names as "a, b and c".
func hookList(list []hooks.Hook) string {
	names := make([]string, len(list))
	for i, h := range list {
		names[i] = string(h)
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
