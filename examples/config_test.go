// Package examples_test checks that the example configs in this directory
// load with forkd's own strict config decoder and say what they mean to.
package examples_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/forkd/forkd/config"
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
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
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
		})
	}
}
