// Package examples_test checks that the example configs in this directory
// load with forkd's own strict config decoder and say what they mean to.
package examples_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/jobs"
)

func TestExampleConfigs_Load(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatalf("repository root: %v", err)
	}
	tests := []struct {
		path    string
		setup   func(t *testing.T) // makes the config's relative paths resolve
		name    string
		workers int
		bind    string
		timeout time.Duration // heartbeat timeout
		drain   time.Duration // graceful_timeout
		command string
		dir     string
		ready   config.ReadyMode
		delay   time.Duration
		jobs    func(t *testing.T, cfg *config.Config) // checks [[singleton]] and [[schedule]]; nil: there are none
	}{
		{
			path: "examples/demo.toml",
			// `make run` runs forkd from the repository root after building
			// bin/forkd-demo; stand in for that with an executable file.
			setup: func(t *testing.T) {
				dir := t.TempDir()
				if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "bin", "forkd-demo"), []byte("#!/bin/sh\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				t.Chdir(dir)
			},
			name: "demo", workers: 4, bind: "tcp://127.0.0.1:8000",
			timeout: 30 * time.Second, drain: 10 * time.Second,
			command: "./bin/forkd-demo", ready: config.ReadyNotify,
		},
		{
			path: "examples/fastapi/forkd.toml",
			setup: func(t *testing.T) {
				if _, err := os.Stat("/usr/bin/python3"); err != nil {
					t.Skipf("the FastAPI example runs Debian's /usr/bin/python3, which is missing: %v", err)
				}
				t.Chdir(root)
			},
			name: "fastapi", workers: 2, bind: "tcp://127.0.0.1:8001",
			timeout: 0, drain: 10 * time.Second,
			command: "/usr/bin/python3", dir: "examples/fastapi",
			ready: config.ReadyStarted, delay: time.Second,
		},
		{
			path: "examples/fastapi-scheduler/forkd.toml",
			setup: func(t *testing.T) {
				if _, err := os.Stat("/usr/bin/python3"); err != nil {
					t.Skipf("the FastAPI scheduler example runs Debian's /usr/bin/python3, which is missing: %v", err)
				}
				t.Chdir(root)
			},
			name: "shop", workers: 4, bind: "tcp://127.0.0.1:8002",
			timeout: 0, drain: 10 * time.Second,
			command: "/usr/bin/python3", dir: "examples/fastapi-scheduler",
			ready: config.ReadyStarted, delay: time.Second,
			jobs: func(t *testing.T, cfg *config.Config) {
				if len(cfg.Singletons) != 1 || len(cfg.Schedules) != 1 {
					t.Fatalf("%d singletons, %d schedules; want 1, 1", len(cfg.Singletons), len(cfg.Schedules))
				}
				sg := cfg.Singletons[0]
				if sg.Name != "scheduler" || sg.Command != "/usr/bin/python3" || !slices.Equal(sg.Args, []string{"scheduler.py"}) ||
					sg.Dir != "examples/fastapi-scheduler" || sg.Env["JOB_EVERY"] != "5" {
					t.Errorf("singleton = %+v; want scheduler: /usr/bin/python3 scheduler.py in examples/fastapi-scheduler, JOB_EVERY=5", sg)
				}
				if sg.Ready != config.ReadyStarted || sg.Start != config.StartAfterReady || sg.Sockets {
					t.Errorf("singleton ready, start, sockets = %q, %q, %v; want started, after_ready, false", sg.Ready, sg.Start, sg.Sockets)
				}
				sc := cfg.Schedules[0]
				if sc.Name != "cleanup" || sc.Command != "/usr/bin/python3" || !slices.Equal(sc.Args, []string{"jobs.py"}) ||
					sc.Dir != "examples/fastapi-scheduler" {
					t.Errorf("schedule = %+v; want cleanup: /usr/bin/python3 jobs.py in examples/fastapi-scheduler", sc)
				}
				if sc.Every.Duration != 5*time.Second || sc.Cron != "" || sc.Timeout.Duration != time.Minute || sc.Overlap != jobs.OverlapSkip {
					t.Errorf("schedule every, cron, timeout, overlap = %v, %q, %v, %q; want 5s, none, 1m, skip",
						sc.Every, sc.Cron, sc.Timeout, sc.Overlap)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.path, "examples/"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, tt.path))
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(t)
			cfg, err := config.Parse(tt.path, data)
			if err != nil {
				t.Fatalf("parse %s: %v", tt.path, err)
			}
			if cfg.Server.Name != tt.name || cfg.Server.Workers != tt.workers {
				t.Errorf("server name, workers = %q, %d; want %q, %d", cfg.Server.Name, cfg.Server.Workers, tt.name, tt.workers)
			}
			if len(cfg.Server.Bind) != 1 || cfg.Server.Bind[0].Raw != tt.bind {
				t.Errorf("bind = %+v, want [%s]", cfg.Server.Bind, tt.bind)
			}
			if cfg.Server.Timeout.Duration != tt.timeout || cfg.Server.GracefulTimeout.Duration != tt.drain {
				t.Errorf("timeout, graceful_timeout = %v, %v; want %v, %v", cfg.Server.Timeout, cfg.Server.GracefulTimeout, tt.timeout, tt.drain)
			}
			w := cfg.Worker
			if w.Command != tt.command || w.Dir != tt.dir || w.Ready != tt.ready || w.ReadyDelay.Duration != tt.delay {
				t.Errorf("worker = %+v; want command %q, dir %q, ready %q, ready_delay %v", w, tt.command, tt.dir, tt.ready, tt.delay)
			}
			if tt.jobs != nil {
				tt.jobs(t, cfg)
			} else if len(cfg.Singletons) != 0 || len(cfg.Schedules) != 0 {
				t.Errorf("%d singletons, %d schedules; want none", len(cfg.Singletons), len(cfg.Schedules))
			}
		})
	}
}
