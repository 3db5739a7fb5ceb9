package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/forkd/forkd/jobs"
)

// wantErr is one expected *Error: where, which key, and a part of the message.
type wantErr struct {
	line, col int
	key       string
	msg       string
}

// checkErrors asserts that err holds exactly want, in order, all in file.
func checkErrors(t *testing.T, file string, err error, want []wantErr) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d", len(want))
	}
	got := Errors(err)
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		e := got[i]
		if e.File != file || e.Line != w.line || e.Col != w.col || e.Key != w.key || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d = %q\nwant %s:%d:%d: %s: …%s…", i, e.Error(), file, w.line, w.col, w.key, w.msg)
		}
		prefix := fmt.Sprintf("%s:%d:%d: ", file, w.line, w.col)
		if w.key != "" {
			prefix += w.key + ": "
		}
		if !strings.HasPrefix(e.Error(), prefix) {
			t.Errorf("error %d = %q, want prefix %q", i, e.Error(), prefix)
		}
	}
}

func TestLoad_invalid(t *testing.T) {
	tests := []struct {
		file string
		want wantErr
	}{
		{"unknown_top", wantErr{1, 1, "wat", "unknown key"}},
		{"unknown_nested", wantErr{3, 1, "server.wrokers", `unknown key (did you mean "workers"?)`}},
		{"unknown_table", wantErr{4, 2, "sever", `unknown table (did you mean "server"?)`}},
		{"unknown_hook_key", wantErr{6, 1, "hooks.on_exit[0].timout", `unknown key (did you mean "timeout"?)`}},
		{"wrong_case", wantErr{2, 1, "server.Workers", `keys are case-sensitive: write "workers"`}},
		{"wrong_type", wantErr{2, 9, "server.workers", "wrong type: want an integer, got a string"}},
		{"wrong_type_env", wantErr{3, 16, "worker.env.PORT", "wrong type: want a string, got an integer"}},
		{"wrong_type_duration", wantErr{2, 11, "server.timeout", `wrong type: want a duration string like "30s", got an integer`}},
		{"wrong_type_bind", wantErr{2, 8, "server.bind", "wrong type: want an array of bind strings"}},
		{"bad_duration", wantErr{4, 11, "server.timeout", `invalid duration "30 seconds" (write e.g. "30s")`}},
		{"negative_duration", wantErr{2, 20, "server.graceful_timeout", `negative duration "-5s"`}},
		{"workers_zero", wantErr{4, 11, "server.workers", "must be between 1 and 4096, got 0"}},
		{"workers_too_many", wantErr{2, 11, "server.workers", "must be between 1 and 4096, got 4097"}},
		{"backlog_zero", wantErr{2, 11, "server.backlog", "must be between 1 and 65535, got 0"}},
		{"backlog_too_big", wantErr{2, 11, "server.backlog", "must be between 1 and 65535, got 65536"}},
		{"min_ready_too_big", wantErr{3, 13, "server.min_ready", "must be between 0 (all workers) and workers (2), got 3"}},
		{"max_booting_negative", wantErr{3, 15, "server.max_booting", "must be between 0 (paced by the CPUs) and 4096, got -1"}},
		{"master_slice_too_short", wantErr{2, 16, "server.master_slice", "must be 0 (the kernel's default) or between 100µs and 100ms, got 50µs"}},
		{"master_slice_too_long", wantErr{2, 16, "server.master_slice", "must be 0 (the kernel's default) or between 100µs and 100ms, got 1s"}},
		{"name_invalid", wantErr{2, 8, "server.name", `got "my app"`}},
		{"bind_no_scheme", wantErr{2, 9, "server.bind[0]", `invalid bind "127.0.0.1:8000": it starts with neither "tcp://" nor "unix:"`}},
		{"bind_no_port", wantErr{2, 33, "server.bind[1]", `invalid bind "tcp://localhost": the port is missing`}},
		{"bind_bad_port", wantErr{2, 9, "server.bind[0]", `port "65536" is not a number from 0 to 65535`}},
		{"bind_ipv6_brackets", wantErr{2, 9, "server.bind[0]", "an IPv6 address goes in brackets"}},
		{"bind_bad_ipv4", wantErr{2, 9, "server.bind[0]", `"10.0.0.300" is not an IPv4 address`}},
		{"bind_unix_relative", wantErr{2, 9, "server.bind[0]", "the socket path must be absolute"}},
		{"bind_unix_too_long", wantErr{2, 9, "server.bind[0]", "the socket path is 108 bytes, the limit is 107"}},
		{"bind_mode_tcp", wantErr{2, 9, "server.bind[0]", "mode applies to unix sockets only"}},
		{"bind_mode_not_octal", wantErr{2, 9, "server.bind[0]", `mode "0999" is not octal`}},
		{"bind_mode_too_big", wantErr{2, 9, "server.bind[0]", `mode "01777" is not octal permission bits from 0001 to 0777`}},
		{"bind_name_colon", wantErr{2, 9, "server.bind[0]", `name "web:1" contains ':'`}},
		{"bind_name_space", wantErr{2, 9, "server.bind[0]", `name "my web" contains ' '`}},
		{"bind_unknown_option", wantErr{2, 9, "server.bind[0]", `unknown option "backlog"`}},
		{"bind_duplicate", wantErr{2, 33, "server.bind[1]", `"tcp://127.0.0.1:08000" listens on the same address as "tcp://127.0.0.1:8000"`}},
		{"bad_ready", wantErr{3, 9, "worker.ready", `must be "notify" or "started", got "READY=1"`}},
		{"ready_delay_notify", wantErr{3, 15, "worker.ready_delay", `applies only with ready = "started"`}},
		{"missing_command", wantErr{4, 1, "worker.command", "required"}},
		{"missing_worker", wantErr{1, 1, "worker.command", "required"}},
		{"command_not_found", wantErr{5, 11, "worker.command", `"nosuchprog-forkd-test" not found in PATH`}},
		{"command_directory", wantErr{2, 11, "worker.command", `"/usr": is a directory`}},
		{"dir_missing", wantErr{3, 7, "worker.dir", `directory "/nonexistent/forkd-test" does not exist`}},
		{"env_bad_key", wantErr{4, 1, `worker.env."A=B"`, "must not be empty or contain '='"}},
		{"hook_unknown", wantErr{4, 9, "hooks.on_start", `unknown hook "on_start"`}},
		{"hook_pre_request", wantErr{4, 9, "hooks.pre_request", "pre_request happens inside workers and cannot run commands"}},
		{"hook_abort_not_blocking", wantErr{10, 14, "hooks.worker_exit[0].on_failure", `"abort" is only possible for on_starting, on_reload, pre_fork and pre_exec`}},
		{"hook_bad_on_failure", wantErr{6, 14, "hooks.on_exit[0].on_failure", `must be "ignore" or "abort", got "retry"`}},
		{"hook_no_exec", wantErr{4, 1, "hooks.on_exit[0].exec", "required"}},
		{"hook_empty_exec", wantErr{1, 27, "hooks.on_exit[0].exec", "must not be empty"}},
		{"hook_table_not_array", wantErr{4, 8, "hooks.on_exit", "write [[hooks.on_exit]]"}},
		{"hook_zero_timeout", wantErr{5, 11, "hooks.on_exit[0].timeout", "must be more than 0s"}},
		{"duplicate_key", wantErr{3, 1, "server.workers", "defined twice"}},
		{"state_dir_relative", wantErr{2, 13, "server.state_dir", `must be an absolute path, got "var/lib/myapp"`}},
		{"schedule_bad_cron", wantErr{6, 8, "schedule[0].cron", `invalid cron expression "61 * * * *"`}},
		{"schedule_cron_interval", wantErr{6, 8, "schedule[0].cron", `is an interval: write every = "5m" instead`}},
		{"schedule_cron_never", wantErr{6, 8, "schedule[0].cron", "matches no date in the next five years"}},
		{"schedule_every_and_cron", wantErr{7, 1, "schedule[0].cron", "set either every or cron, not both"}},
		{"schedule_no_timing", wantErr{4, 1, "schedule[0]", `needs every (e.g. every = "5m") or cron`}},
		{"schedule_every_zero", wantErr{6, 9, "schedule[0].every", "must be more than 0s"}},
		{"schedule_every_negative", wantErr{6, 9, "schedule[0].every", `negative duration "-5m"`}},
		{"schedule_every_too_short", wantErr{6, 9, "schedule[0].every", "must be at least 1s, got 500ms"}},
		{"schedule_timezone_with_every", wantErr{7, 1, "schedule[0].timezone", "applies only with cron"}},
		{"schedule_unknown_timezone", wantErr{7, 12, "schedule[0].timezone", `unknown time zone "Europe/Seoul"`}},
		{"schedule_missing_command", wantErr{4, 1, "schedule[0].command", "required: the program to run"}},
		{"schedule_bad_overlap", wantErr{8, 11, "schedule[0].overlap", `must be "skip", "queue" or "replace", got "parallel"`}},
		{"schedule_persistent_no_state_dir", wantErr{8, 14, "schedule[0].persistent", "set server.state_dir"}},
		{"schedule_jitter_too_long", wantErr{7, 10, "schedule[0].jitter", "must be less than every (1m0s)"}},
		{"schedule_env_reserved", wantErr{8, 5, "schedule[0].env.FORKD_RUN_ID", "forkd sets FORKD_RUN_ID for every run itself"}},
		{"schedule_table_not_array", wantErr{4, 2, "schedule", "write [[schedule]] for each element"}},
		{"singleton_no_name", wantErr{4, 1, "singleton[0].name", "required: a name for it"}},
		{"singleton_command_not_found", wantErr{6, 11, "singleton[0].command", `"nosuchprog-forkd-test" not found in singleton[0].env's PATH`}},
		{"singleton_bad_ready", wantErr{7, 9, "singleton[0].ready", `must be "started" or "notify", got "ready"`}},
		{"singleton_bad_start", wantErr{7, 9, "singleton[0].start", `must be "after_ready" or "before_workers", got "before_ready"`}},
		{"singleton_ready_delay_notify", wantErr{8, 15, "singleton[0].ready_delay", `applies only with ready = "started"`}},
		{"job_bad_name", wantErr{5, 8, "schedule[0].name", `must be 1 to 64 characters of a-z 0-9 _ -, got "Clean Up"`}},
		{"job_duplicate_name", wantErr{9, 8, "schedule[0].name", `"cleanup" is already the name of singleton[0]`}},
		{"cluster_no_endpoints", wantErr{7, 9, "singleton[0].scope", `scope = "cluster" needs etcd: set [cluster] endpoints`}},
		{"cluster_bad_scope", wantErr{8, 9, "schedule[0].scope", `must be "instance" or "cluster", got "global"`}},
		{"cluster_bad_endpoint", wantErr{5, 39, "cluster.endpoints[1]", `invalid etcd endpoint "127.0.0.1:2379"`}},
		{"cluster_bad_ca", wantErr{6, 6, "cluster.ca", "/nonexistent/etcd-ca.pem: no such file or directory"}},
		{"cluster_cert_no_key", wantErr{6, 8, "cluster.cert", "needs cluster.key"}},
		{"cluster_lease_short", wantErr{6, 13, "cluster.lease_ttl", "must be at least 2s (etcd's shortest lease), got 1s"}},
		{"cluster_margin_too_long", wantErr{7, 15, "cluster.stop_margin", "must be less than lease_ttl (4s), got 4s"}},
		{"syntax_error", wantErr{3, 15, "", "syntax error: basic strings cannot have new lines"}},
		{"syntax_error_header", wantErr{1, 8, "", "syntax error: expected ']' to close table name"}},
	}
	t.Setenv("STATE_DIRECTORY", "") // no state_dir but the file's
	files, err := filepath.Glob("testdata/invalid/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("testdata/invalid holds %d files, the table covers %d", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "invalid", tt.file+".toml")
			cfg, err := Load(path)
			if cfg != nil {
				t.Errorf("got a config with the error: %+v", cfg)
			}
			checkErrors(t, path, err, []wantErr{tt.want})
		})
	}
}

func TestLoad_several(t *testing.T) {
	path := "testdata/several.toml"
	_, err := Load(path)
	checkErrors(t, path, err, []wantErr{
		{2, 11, "server.workers", "must be between 1 and 4096, got 0"},
		{3, 11, "server.timeout", `invalid duration "soon"`},
		{4, 9, "server.bind[0]", "the port is missing"},
		{4, 28, "server.bind[1]", `mode "0999"`},
		{5, 1, "server.wrokers", "unknown key"},
		{6, 11, "server.backlog", "wrong type: want an integer, got a string"},
		{9, 11, "worker.command", "not found in PATH"},
		{10, 9, "worker.ready", `got "eventually"`},
		{14, 14, "hooks.when_ready[0].on_failure", `"abort" is only possible`},
	})
	// errors.Join of *Error: every one is reachable on its own.
	var e *Error
	if !errors.As(err, &e) || e.Line != 2 {
		t.Errorf("errors.As found %v, want the first error", e)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 9 {
		t.Errorf("err.Error() has %d lines, want 9", n)
	}
}

// TestParse_everyWrongValue: every wrong element of an array or inline
// table is reported, and so is a wrong first value of a key defined twice.
func TestParse_everyWrongValue(t *testing.T) {
	doc := "[server]\nworkers = 0\nworkers = 2\n" +
		"[worker]\ncommand = \"/bin/sh\"\nargs = [\"a\", 2, [\"b\"]]\nenv = { A = 1, B = \"ok\", C = true }\n"
	_, err := Parse("t.toml", []byte(doc))
	checkErrors(t, "t.toml", err, []wantErr{
		{2, 11, "server.workers", "must be between 1 and 4096, got 0"},
		{3, 1, "server.workers", "defined twice"},
		// A nested array has no position of its own: the array's is given.
		{6, 8, "worker.args[2]", "wrong type: want a string, got an array"},
		{6, 14, "worker.args[1]", "wrong type: want a string, got an integer"},
		{7, 13, "worker.env.A", "wrong type: want a string, got an integer"},
		{7, 30, "worker.env.C", "wrong type: want a string, got a boolean"},
	})
}

// TestParse_portZeroTwice: two binds of port 0 are two ports, not the same
// address.
func TestParse_portZeroTwice(t *testing.T) {
	doc := "[server]\nbind = [\"tcp://127.0.0.1:0\", \"tcp://127.0.0.1:0\"]\n[worker]\ncommand = \"/bin/sh\"\n"
	if _, err := Parse("t.toml", []byte(doc)); err != nil {
		t.Fatal(err)
	}
}

func TestLoad_full(t *testing.T) {
	cfg, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path: "testdata/full.toml",
		Server: Server{
			Name:     "shop-api",
			Workers:  8,
			MinReady: 6,
			Bind: []Bind{
				{Raw: "tcp://0.0.0.0:8000?name=web", Network: "tcp", Address: "0.0.0.0:8000", Name: "web"},
				{Raw: "tcp://[::1]:9000", Network: "tcp", Address: "[::1]:9000"},
				{Raw: "unix:/run/shop/api.sock?mode=0660&name=admin", Network: "unix", Address: "/run/shop/api.sock", Mode: 0o660, Name: "admin"},
			},
			Backlog:         512,
			Timeout:         Duration{45 * time.Second},
			GracefulTimeout: Duration{90 * time.Second},
			BootTimeout:     Duration{2 * time.Minute},
			KillTimeout:     Duration{250 * time.Millisecond},
			MasterSlice:     Duration{250 * time.Microsecond},
			StateDir:        "/var/lib/shop-api",
		},
		Worker: Worker{
			Program: Program{
				Command: "/bin/sh",
				Path:    "/bin/sh",
				Args:    []string{"-c", "exec myapp --fd 3"},
				Env:     map[string]string{"PYTHONUNBUFFERED": "1", "APP.MODE": "production"},
				Dir:     "/",
			},
			Ready:      ReadyStarted,
			ReadyDelay: Duration{1500 * time.Millisecond},
		},
		Hooks: map[string][]HookExec{
			"on_starting": {
				{Exec: []string{"/bin/echo", "--up"}, Timeout: Duration{2 * time.Minute}, OnFailure: OnFailureAbort},
				{Exec: []string{"/usr/bin/logger", "shop starting"}, Timeout: Duration{30 * time.Second}, OnFailure: OnFailureIgnore},
			},
			"child_exit": {
				{Exec: []string{"/usr/bin/logger", "a worker exited"}, Timeout: Duration{5 * time.Second}, OnFailure: OnFailureIgnore},
			},
		},
		Singletons: []Singleton{{
			Name: "scheduler",
			Program: Program{
				Command: "/bin/sh",
				Path:    "/bin/sh",
				Args:    []string{"-c", "exec python3 -m app.scheduler"},
				Env:     map[string]string{"APP_ROLE": "scheduler"},
				Dir:     "/",
			},
			Ready:   ReadyNotify,
			Start:   StartBeforeWorkers,
			Sockets: true,
		}},
		Schedules: []Schedule{{
			Name:  "cleanup",
			Every: Duration{5 * time.Minute},
			Program: Program{
				Command: "/bin/sh",
				Path:    "/bin/sh",
				Args:    []string{"-c", "exec python3 -m app.jobs.cleanup"},
				Env:     map[string]string{"APP_ROLE": "cleanup"},
				Dir:     "/",
			},
			Timeout:    Duration{time.Minute},
			Jitter:     Duration{10 * time.Second},
			Overlap:    jobs.OverlapQueue,
			Persistent: true,
		}, {
			Name:     "report_daily",
			Cron:     "30 3 * * MON-FRI",
			Timezone: "Asia/Seoul",
			Program: Program{
				Command: "/bin/sh",
				Path:    "/bin/sh",
			},
			Overlap: jobs.OverlapReplace,
		}},
	}
	// The parsed cron is checked on its own: it holds the library's state.
	if len(cfg.Schedules) == 2 {
		ct := cfg.Schedules[1].CronTiming
		if ct == nil || ct.String() != "30 3 * * MON-FRI" || ct.Location().String() != "Asia/Seoul" {
			t.Errorf("report_daily's CronTiming = %v", ct)
		}
		cfg.Schedules[1].CronTiming = nil
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(full.toml) =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParse_defaults(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	cfg, err := Load("testdata/minimal.toml")
	if err != nil {
		t.Fatal(err)
	}
	s, w := cfg.Server, cfg.Worker
	if s.Name != "minimal" || s.Workers != 1 || s.MinReady != 0 || s.Backlog != 2048 {
		t.Errorf("name, workers, min_ready, backlog = %q, %d, %d, %d; want minimal, 1, 0, 2048", s.Name, s.Workers, s.MinReady, s.Backlog)
	}
	if len(s.Bind) != 1 || s.Bind[0] != (Bind{Raw: "tcp://127.0.0.1:8000", Network: "tcp", Address: "127.0.0.1:8000"}) {
		t.Errorf("bind = %+v, want [tcp://127.0.0.1:8000]", s.Bind)
	}
	for name, got := range map[string]Duration{
		"timeout": s.Timeout, "graceful_timeout": s.GracefulTimeout,
		"boot_timeout": s.BootTimeout, "kill_timeout": s.KillTimeout, "ready_delay": w.ReadyDelay,
	} {
		want := map[string]time.Duration{"timeout": 30 * time.Second, "graceful_timeout": 30 * time.Second,
			"boot_timeout": 30 * time.Second, "kill_timeout": 5 * time.Second}[name]
		if got.Duration != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if w.Ready != ReadyNotify || w.Dir != "" || len(w.Args) != 0 || len(w.Env) != 0 || len(cfg.Hooks) != 0 {
		t.Errorf("worker = %+v, hooks = %v; want ready notify and nothing else", w, cfg.Hooks)
	}

	// Default is the same, less the command.
	def := Default()
	def.Path, def.Server.Name, def.Worker.Command, def.Worker.Path = cfg.Path, "minimal", "/bin/sh", "/bin/sh"
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("minimal config =\n%+v\nDefault() with its command =\n%+v", cfg, def)
	}
}

func TestParse_instanceName(t *testing.T) {
	data := []byte("[worker]\ncommand = \"/bin/sh\"\n")
	for path, want := range map[string]string{
		"":                         "forkd",
		"/etc/forkd/myapp.toml":    "myapp",
		"/etc/forkd/my.app@2.toml": "my.app@2",
		"relative/conf":            "conf",
	} {
		cfg, err := Parse(path, data)
		if err != nil {
			t.Errorf("Parse(%q): %v", path, err)
			continue
		}
		if cfg.Server.Name != want || cfg.Path != path {
			t.Errorf("Parse(%q): name %q, path %q; want %q, %q", path, cfg.Server.Name, cfg.Path, want, path)
		}
	}

	// A file name that cannot be an instance name needs server.name.
	path := "/etc/forkd/my app.toml"
	_, err := Parse(path, data)
	checkErrors(t, path, err, []wantErr{{1, 1, "server.name", `the file name "my app" is not a valid instance name`}})
	_, err = Parse(path, []byte("[server]\nworkers = 2\n[worker]\ncommand = \"/bin/sh\"\n"))
	checkErrors(t, path, err, []wantErr{{1, 1, "server.name", "set server.name"}})
	if _, err := Parse(path, append([]byte("[server]\nname = \"myapp\"\n"), data...)); err != nil {
		t.Errorf("with server.name set: %v", err)
	}
}

func TestParse_minReady(t *testing.T) {
	for doc, want := range map[string]int{
		"[server]\nworkers = 5\n":                 0,
		"[server]\nworkers = 5\nmin_ready = 0\n":  0,
		"[server]\nworkers = 5\nmin_ready = 2\n":  2,
		"[server]\nworkers = 5\nmin_ready = 5\n":  5,
		"[server]\nmin_ready = 1\n":               1,
		"server = { workers = 3, min_ready = 1 }": 1,
	} {
		cfg, err := Parse("", []byte(doc+"\n[worker]\ncommand = \"/bin/sh\"\n"))
		if err != nil {
			t.Errorf("%q: %v", doc, err)
			continue
		}
		if cfg.Server.MinReady != want {
			t.Errorf("%q: min_ready = %d, want %d", doc, cfg.Server.MinReady, want)
		}
	}
	_, err := Parse("x.toml", []byte("[server]\nmin_ready = -1\n[worker]\ncommand = \"/bin/sh\"\n"))
	checkErrors(t, "x.toml", err, []wantErr{{2, 13, "server.min_ready", "got -1"}})
}

func TestParse_positions(t *testing.T) {
	tests := []struct {
		name, doc string
		want      wantErr
	}{
		{"crlf", "# comment\r\n[server]\r\nworkers = 0\r\n[worker]\r\ncommand = \"/bin/sh\"\r\n",
			wantErr{3, 11, "server.workers", "got 0"}},
		{"columns count bytes", "[server] # é\nname = \"é\" # é\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{2, 8, "server.name", `got "é"`}},
		{"dotted key", "server.workers = 0\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 18, "server.workers", "got 0"}},
		{"inline table", "server = { workers = 1, backlog = 0 }\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 35, "server.backlog", "got 0"}},
		{"multi-line array", "[server]\nbind = [\n  \"tcp://127.0.0.1:1\",\n  \"tcp://127.0.0.1\",\n]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{4, 3, "server.bind[1]", "the port is missing"}},
		{"array of inline tables", "hooks.on_exit = [\n  { exec = [\"/bin/true\"] },\n  { exec = [\"/bin/true\"], timeout = 5 },\n]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{3, 37, "hooks.on_exit[1].timeout", "wrong type: want a duration string"}},
		{"second array table", "[worker]\ncommand = \"/bin/sh\"\n[[hooks.on_exit]]\nexec = [\"/bin/true\"]\n[[hooks.on_exit]]\nexec = [\"\"]\n",
			wantErr{6, 9, "hooks.on_exit[1].exec[0]", "the program must not be empty"}},
		{"quoted key", "[worker]\ncommand = \"/bin/sh\"\nenv.\"A B\" = 1\n",
			wantErr{3, 13, `worker.env."A B"`, "wrong type: want a string, got an integer"}},
		{"dotted key into a duration", "[server]\ntimeout.seconds = 30\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{2, 1, "server.timeout", "got a table"}},
		{"table header into a duration", "[worker]\ncommand = \"/bin/sh\"\n[server.timeout]\n",
			wantErr{3, 9, "server.timeout", "got a table"}},
		{"array table for a table", "[[worker]]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 3, "worker", "got an array of tables (write [worker])"}},
		{"table for a scalar", "[server]\nworkers = 2\n[server.workers]\n",
			wantErr{3, 9, "server.workers", "wrong type: want an integer, got a table"}},
		{"unexpected end", "[server]\nworkers = [1,",
			wantErr{2, 13, "", "syntax error"}},
		{"array of tables for binds", "[[server.bind]]\nNetwork = \"unix\"\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 10, "server.bind", "wrong type: want an array of bind strings like [\"tcp://127.0.0.1:8000\"], got an array of tables"}},
		{"table inside binds", "[server.bind.x]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 9, "server.bind", "wrong type: want an array of bind strings"}},
		{"array of tables for args", "[worker]\ncommand = \"/bin/sh\"\n[[worker.args]]\n",
			wantErr{3, 10, "worker.args", "wrong type: want an array of strings, got an array of tables"}},
		{"table for an env value", "[worker]\ncommand = \"/bin/sh\"\n[worker.env.X]\n",
			wantErr{3, 13, "worker.env.X", "wrong type: want a string, got a table"}},
		{"dotted key into an env value", "[worker]\ncommand = \"/bin/sh\"\nenv.A.B = \"x\"\n",
			wantErr{3, 5, "worker.env.A", "wrong type: want a string, got a table"}},
		{"hook not a table", "[hooks]\non_starting = [1]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{2, 16, "hooks.on_starting[0]", "wrong type: want a table, got an integer"}},
		{"byte order mark", "\ufeff[worker]\ncommand = 5\n",
			wantErr{2, 11, "worker.command", "wrong type: want a string, got an integer"}},
		{"not UTF-8", "[worker]\ncommand = \"/bin/sh\"\nK\xe9 = \"x\"\n",
			wantErr{3, 2, "", "byte 0xe9 is not UTF-8"}},
		{"table inside an array of tables", "[hooks.on_starting.x]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 8, "hooks.on_starting", "wrong type: want an array of tables, got a table (write [[hooks.on_starting]] for each element)"}},
		{"table in the wrong case", "[Worker]\ncommand = \"/bin/sh\"\n",
			wantErr{1, 2, "Worker", `unknown table (keys are case-sensitive: write "worker")`}},
		{"hook command missing", "[worker]\ncommand = \"/bin/sh\"\n[[hooks.on_exit]]\nexec = [\"/nonexistent/forkd-test-hook\"]\n",
			wantErr{4, 9, "hooks.on_exit[0].exec[0]", `"/nonexistent/forkd-test-hook"`}},
		{"protocol variable in env", "[worker]\ncommand = \"/bin/sh\"\n[worker.env]\nLISTEN_FDS = \"3\"\n",
			wantErr{4, 1, "worker.env.LISTEN_FDS", "forkd sets LISTEN_FDS for every worker itself"}},
		{"unix path of a directory", "[server]\nbind = [\"unix:/run/\"]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{2, 9, "server.bind[0]", `the socket path ends in "/"`}},
		{"same unix path written twice", "[server]\nbind = [\"unix:/run/a.sock\", \"unix:/run//a.sock\"]\n[worker]\ncommand = \"/bin/sh\"\n",
			wantErr{2, 29, "server.bind[1]", `"unix:/run//a.sock" listens on the same address as "unix:/run/a.sock"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.doc))
			checkErrors(t, "t.toml", err, []wantErr{tt.want})
		})
	}
}

func TestParse_doesNotChangeInput(t *testing.T) {
	doc := []byte("[server]\nworkers = \"x\"\ntimeout = 5\n[worker]\ncommand = \"/bin/sh\"\n")
	orig := bytes.Clone(doc)
	if _, err := Parse("", doc); err == nil {
		t.Fatal("want errors")
	}
	if !bytes.Equal(doc, orig) {
		t.Errorf("Parse changed its input to %q", doc)
	}
}

// writeFile creates path with content and mode, and its directory.
func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func TestParse_command(t *testing.T) {
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	writeFile(t, filepath.Join(bin, "myapp"), "#!/bin/sh\nexit 0\n", 0o755)
	writeFile(t, filepath.Join(tmp, "other", "myapp"), "not a program\n", 0o644)
	writeFile(t, filepath.Join(tmp, "data.txt"), "not a program\n", 0o644)
	if err := os.Mkdir(filepath.Join(tmp, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "/nonexistent:"+bin)

	ok := []struct {
		name, worker, want string
	}{
		{"in the process's PATH", `command = "myapp"`, filepath.Join(bin, "myapp")},
		{"in worker.env's PATH", `command = "myapp"` + "\nenv = { PATH = \"relative:" + filepath.Join(tmp, "other") + ":" + bin + `" }`, filepath.Join(bin, "myapp")},
		{"absolute", `command = "` + bin + `/../bin/myapp"`, filepath.Join(bin, "myapp")},
		{"relative to dir", `command = "./bin/myapp"` + "\ndir = \"" + tmp + `"`, filepath.Join(bin, "myapp")},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.toml", []byte("[worker]\n"+tt.worker+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Worker.Path != tt.want {
				t.Errorf("path = %q, want %q", cfg.Worker.Path, tt.want)
			}
		})
	}

	bad := []struct {
		name, worker, msg string
	}{
		{"not in worker.env's PATH", "command = \"myapp\"\nenv.PATH = \"/usr/bin\"", `"myapp" not found in worker.env's PATH`},
		{"not executable in PATH", "command = \"myapp\"\nenv.PATH = \"" + filepath.Join(tmp, "other") + `"`, "as an executable file (is not executable"},
		{"relative to cwd", `command = "bin/myapp"`, "no such file"},
		{"not executable", `command = "` + filepath.Join(tmp, "data.txt") + `"`, "is not executable"},
		{"directory", `command = "./adir"` + "\ndir = \"" + tmp + `"`, "is a directory"},
		{"empty", `command = ""`, "must not be empty"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte("[worker]\n"+tt.worker+"\n"))
			checkErrors(t, "t.toml", err, []wantErr{{2, 11, "worker.command", tt.msg}})
		})
	}

	t.Run("dir is a file", func(t *testing.T) {
		_, err := Parse("t.toml", []byte("[worker]\ncommand = \"/bin/sh\"\ndir = \""+filepath.Join(tmp, "data.txt")+"\"\n"))
		checkErrors(t, "t.toml", err, []wantErr{{3, 7, "worker.dir", "is not a directory"}})
	})
}

func TestDuration(t *testing.T) {
	for text, want := range map[string]time.Duration{
		"30s": 30 * time.Second, "1m30s": 90 * time.Second, "250ms": 250 * time.Millisecond,
		"0s": 0, "0": 0, "1h": time.Hour, "1.5s": 1500 * time.Millisecond,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(text)); err != nil {
			t.Errorf("UnmarshalText(%q): %v", text, err)
			continue
		}
		if d.Duration != want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", text, d.Duration, want)
		}
		out, err := d.MarshalText()
		var back Duration
		if err != nil || back.UnmarshalText(out) != nil || back != d || d.String() != string(out) {
			t.Errorf("%q: MarshalText = %q, %v; String = %q; read back as %v", text, out, err, d.String(), back)
		}
	}
	for text, msg := range map[string]string{
		"30": "invalid duration", "30 seconds": "invalid duration", "": "invalid duration",
		"1d": "invalid duration", " 1s": "invalid duration", "-1s": "negative duration", "-0.5ms": "negative duration",
	} {
		d := Duration{time.Minute}
		err := d.UnmarshalText([]byte(text))
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("UnmarshalText(%q) = %v, want an error containing %q", text, err, msg)
		}
		if d.Duration != time.Minute {
			t.Errorf("UnmarshalText(%q) changed the value to %v", text, d.Duration)
		}
	}
}

func TestError(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{"a.toml", 4, 11, "server.timeout", "bad"}, "a.toml:4:11: server.timeout: bad"},
		{Error{"a.toml", 4, 0, "server.timeout", "bad"}, "a.toml:4: server.timeout: bad"},
		{Error{"a.toml", 0, 0, "server.timeout", "bad"}, "a.toml: server.timeout: bad"},
		{Error{"", 4, 11, "server.timeout", "bad"}, "4:11: server.timeout: bad"},
		{Error{"a.toml", 3, 15, "", "syntax error"}, "a.toml:3:15: syntax error"},
		{Error{"", 0, 0, "", "bad"}, "bad"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestErrors(t *testing.T) {
	a, b := &Error{Line: 1, Msg: "a"}, &Error{Line: 2, Msg: "b"}
	if got := Errors(nil); got != nil {
		t.Errorf("Errors(nil) = %v", got)
	}
	if got := Errors(errors.New("x")); got != nil {
		t.Errorf("Errors(plain error) = %v", got)
	}
	if got := Errors(fmt.Errorf("reload: %w", a)); len(got) != 1 || got[0] != a {
		t.Errorf("Errors(wrapped) = %v", got)
	}
	if got := Errors(errors.Join(a, errors.New("x"), b)); len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("Errors(joined) = %v", got)
	}
}

func TestLoad_missingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "read config: ") {
		t.Errorf("Load(missing) = %v, want a wrapped os.ErrNotExist", err)
	}
}

// TestGoTOML_textErrors records what go-toml (the version go.mod names)
// does with an error from UnmarshalText — Parse depends on it — and checks
// that such an error, when go-toml does report it, comes out with the
// right position and key.
func TestGoTOML_textErrors(t *testing.T) {
	decode := func(doc string) error {
		var c Config
		dec := toml.NewDecoder(strings.NewReader(doc))
		dec.DisallowUnknownFields()
		return dec.Decode(&c)
	}

	// For a string, go-toml wraps the error in a DecodeError positioned on
	// the value.
	doc := "[server]\nbind = [\"tcp://127.0.0.1:1\", \"tcp://x\"]\n"
	var de *toml.DecodeError
	if err := decode(doc); !errors.As(err, &de) {
		t.Fatalf("go-toml returned %T %v for a bad bind string, want a *toml.DecodeError", err, err)
	}
	d := scan("t.toml", []byte(doc))
	e := d.fromDecodeError(de, "")
	if e.Line != 2 || e.Col != 30 || e.Key != "server.bind[1]" || !strings.HasPrefix(e.Msg, `invalid bind "tcp://x"`) {
		t.Errorf("from go-toml's DecodeError: %v, want t.toml:2:30: server.bind[1]: invalid bind …", e)
	}

	// For another kind, go-toml passes the raw text to UnmarshalText and
	// returns its error bare, without a position: scan catches these first.
	err := decode("[server]\ntimeout = 30\n")
	if err == nil || errors.As(err, &de) {
		t.Logf("go-toml now returns %T %v for an integer duration; scan's check may be redundant", err, err)
	}
	_, err = Parse("t.toml", []byte("[server]\ntimeout = 30\n[worker]\ncommand = \"/bin/sh\"\n"))
	checkErrors(t, "t.toml", err, []wantErr{{2, 11, "server.timeout", "wrong type"}})
}
