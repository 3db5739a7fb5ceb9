package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/jobs"
)

const shWorker = "[worker]\ncommand = \"/bin/sh\"\n"

func TestParse_jobDefaults(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	doc := shWorker + `
[[singleton]]
name = "scheduler"
command = "sh"

[[schedule]]
name = "cleanup"
every = "5m"
command = "/bin/true"

[[schedule]]
name = "nightly"
cron = "@daily"
command = "/bin/true"
`
	cfg, err := Parse("t.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.StateDir != "" {
		t.Errorf("state_dir = %q, want none", cfg.Server.StateDir)
	}
	sg := cfg.Singletons[0]
	if sg.Ready != ReadyStarted || sg.Start != StartAfterReady || sg.Sockets || sg.ReadyDelay.Duration != 0 {
		t.Errorf("singleton = %+v; want ready started, start after_ready, no sockets", sg)
	}
	if !filepath.IsAbs(sg.Path) || filepath.Base(sg.Path) != "sh" {
		t.Errorf("singleton path = %q, want sh found in PATH", sg.Path)
	}
	for _, s := range cfg.Schedules {
		if s.Overlap != jobs.OverlapSkip || s.Timeout.Duration != 0 || s.Jitter.Duration != 0 || s.Persistent || s.Path != "/bin/true" {
			t.Errorf("schedule %s = %+v; want overlap skip, no timeout, no jitter, not persistent", s.Name, s)
		}
	}

	anchor := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	every := cfg.Schedules[0]
	if every.CronTiming != nil {
		t.Errorf("every schedule has a CronTiming")
	}
	if got := every.Timing(anchor); got != (jobs.Every{Period: 5 * time.Minute, Anchor: anchor}) {
		t.Errorf("Timing = %v", got)
	}
	nightly := cfg.Schedules[1]
	if nightly.CronTiming == nil || nightly.CronTiming.Location() != time.Local {
		t.Fatalf("cron schedule: CronTiming %v, want one in the machine's zone", nightly.CronTiming)
	}
	if got := nightly.Timing(anchor); got != jobs.Timing(nightly.CronTiming) {
		t.Errorf("Timing = %v, want the CronTiming", got)
	}
}

func TestParse_stateDir(t *testing.T) {
	persistent := shWorker + "[[schedule]]\nname = \"backup\"\ncron = \"@daily\"\ncommand = \"/bin/true\"\npersistent = true\n"
	tmp := t.TempDir()

	// systemd's StateDirectory=: the first of the list.
	t.Setenv("STATE_DIRECTORY", "/var/lib/myapp:/var/lib/other")
	cfg, err := Parse("t.toml", []byte(persistent))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.StateDir != "/var/lib/myapp" {
		t.Errorf("state_dir = %q, want the first of $STATE_DIRECTORY", cfg.Server.StateDir)
	}
	// The file's own wins.
	cfg, err = Parse("t.toml", []byte("[server]\nstate_dir = \""+tmp+"\"\n"+persistent))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.StateDir != tmp {
		t.Errorf("state_dir = %q, want %q", cfg.Server.StateDir, tmp)
	}
	// A directory that does not exist yet is made when first needed.
	if _, err := Parse("t.toml", []byte("[server]\nstate_dir = \""+tmp+"/not/yet\"\n"+shWorker)); err != nil {
		t.Error(err)
	}

	t.Setenv("STATE_DIRECTORY", "")
	file := filepath.Join(tmp, "file")
	writeFile(t, file, "", 0o600)
	for doc, want := range map[string]wantErr{
		"[server]\nstate_dir = \"" + file + "\"\n" + shWorker: {2, 13, "server.state_dir", "is not a directory"},
		"[server]\nstate_dir = \"\"\n" + shWorker:             {2, 13, "server.state_dir", "must not be empty"},
		persistent: {7, 14, "schedule[0].persistent", "needs a directory for the last-run times: set server.state_dir"},
	} {
		_, err := Parse("t.toml", []byte(doc))
		checkErrors(t, "t.toml", err, []wantErr{want})
	}
}

func TestParse_jobErrors(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "")
	notExec := filepath.Join(t.TempDir(), "data.txt")
	writeFile(t, notExec, "not a program\n", 0o644)
	tests := []struct {
		name, doc string
		want      []wantErr
	}{
		{"names unique among schedules", `
[[schedule]]
name = "a"
every = "1m"
command = "/bin/true"
[[schedule]]
name = "a"
cron = "* * * * *"
command = "/bin/true"`, []wantErr{{9, 8, "schedule[1].name", `"a" is already the name of schedule[0]`}}},
		{"names unique among singletons", `
[[singleton]]
name = "a"
command = "/bin/true"
[[singleton]]
name = "a"
command = "/bin/true"`, []wantErr{{8, 8, "singleton[1].name", `"a" is already the name of singleton[0]`}}},
		{"name too long", `
[[singleton]]
name = "` + strings.Repeat("a", 65) + `"
command = "/bin/true"`, []wantErr{{5, 8, "singleton[0].name", "must be 1 to 64 characters"}}},
		{"name with a dot", `
[[singleton]]
name = "app.scheduler"
command = "/bin/true"`, []wantErr{{5, 8, "singleton[0].name", `got "app.scheduler"`}}},
		{"empty timezone", `
[[schedule]]
name = "a"
cron = "0 3 * * *"
timezone = ""
command = "/bin/true"`, []wantErr{{7, 12, "schedule[0].timezone", "must not be empty"}}},
		{"timezone in the cron", `
[[schedule]]
name = "a"
cron = "TZ=Asia/Seoul 0 3 * * *"
command = "/bin/true"`, []wantErr{{6, 8, "schedule[0].cron", "set timezone instead"}}},
		{"empty cron", `
[[schedule]]
name = "a"
cron = ""
command = "/bin/true"`, []wantErr{{6, 8, "schedule[0].cron", "empty cron expression"}}},
		{"seconds field", `
[[schedule]]
name = "a"
cron = "0 */5 * * * *"
command = "/bin/true"`, []wantErr{{6, 8, "schedule[0].cron", "invalid cron expression"}}},
		{"cron of the wrong type", `
[[schedule]]
name = "a"
cron = 5
command = "/bin/true"`, []wantErr{{6, 8, "schedule[0].cron", "wrong type: want a string, got an integer"}}},
		{"every of the wrong type", `
[[schedule]]
name = "a"
every = 300
command = "/bin/true"`, []wantErr{{6, 9, "schedule[0].every", "wrong type: want a duration string"}}},
		{"misspelled key", `
[[schedule]]
name = "a"
evry = "5m"
command = "/bin/true"`, []wantErr{
			{4, 1, "schedule[0]", "needs every"},
			{6, 1, "schedule[0].evry", `unknown key (did you mean "every"?)`},
		}},
		{"protocol variable in a singleton's env", `
[[singleton]]
name = "a"
command = "/bin/true"
env.NOTIFY_SOCKET = "/run/x"`, []wantErr{{7, 5, "singleton[0].env.NOTIFY_SOCKET", "forkd sets NOTIFY_SOCKET for a singleton itself"}}},
		{"missing dir", `
[[schedule]]
name = "a"
every = "1m"
command = "/bin/true"
dir = "/nonexistent/forkd-test"`, []wantErr{{8, 7, "schedule[0].dir", "does not exist"}}},
		{"not executable", `
[[schedule]]
name = "a"
every = "1m"
command = "` + notExec + `"`, []wantErr{{7, 11, "schedule[0].command", "is not executable"}}},
		{"inline tables, several problems", `
schedule = [
  { name = "a", every = "0s", command = "/bin/true", overlap = "never" },
  { name = "a", cron = "* * * * *", every = "1m", command = "/bin/true" },
]`, []wantErr{
			{2, 25, "schedule[0].every", "must be more than 0s"},
			{2, 64, "schedule[0].overlap", `got "never"`},
			{3, 12, "schedule[1].name", `"a" is already the name of schedule[0]`},
			{3, 17, "schedule[1].cron", "set either every or cron, not both"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := shWorker + tt.doc + "\n"
			if !strings.HasPrefix(tt.doc, "\n[") {
				// Top-level keys: before any table.
				doc = strings.TrimPrefix(tt.doc, "\n") + "\n" + shWorker
			}
			_, err := Parse("t.toml", []byte(doc))
			checkErrors(t, "t.toml", err, tt.want)
		})
	}
}

// TestParse_jobNames: what a name may be.
func TestParse_jobNames(t *testing.T) {
	for _, name := range []string{"a", "cleanup", "report_daily", "job-2", "0", strings.Repeat("x", 64)} {
		if !validJobName(name) {
			t.Errorf("validJobName(%q) = false", name)
		}
	}
	for _, name := range []string{"", "Cleanup", "a b", "a.b", "a/b", "é", strings.Repeat("x", 65)} {
		if validJobName(name) {
			t.Errorf("validJobName(%q) = true", name)
		}
	}
}

func TestParse_jobsExample(t *testing.T) {
	data, err := os.ReadFile("testdata/jobs.toml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("STATE_DIRECTORY", "/var/lib/jobs")
	if _, err := Parse("testdata/jobs.toml", data); err != nil {
		t.Fatal(err)
	}
}
