package config

import (
	"os"
	"strings"
	"time"

	"github.com/forkd/forkd/jobs"
)

// The defaults, Gunicorn's where the meaning is the same.
const (
	defaultWorkers         = 1
	defaultBind            = "tcp://127.0.0.1:8000"
	defaultBacklog         = 2048
	defaultTimeout         = 30 * time.Second
	defaultGracefulTimeout = 30 * time.Second
	defaultBootTimeout     = 30 * time.Second
	defaultKillTimeout     = 5 * time.Second
	defaultHookTimeout     = 30 * time.Second
	defaultMasterSlice     = MinMasterSlice
)

// The range of a master_slice other than 0: the kernel's own bounds on a
// requested slice.
const (
	MinMasterSlice = 100 * time.Microsecond
	MaxMasterSlice = 100 * time.Millisecond
)

// Default returns a config with every default set and no worker command:
// instance "forkd", 1 worker, bind tcp://127.0.0.1:8000, backlog 2048,
// timeout, graceful_timeout and boot_timeout 30s, kill_timeout 5s,
// master_slice 100µs, ready "notify", no hooks, singletons or schedules,
// no state_dir. It is what an empty file decodes to, less the required
// worker.command (and the state_dir that Parse takes from
// $STATE_DIRECTORY); Parse would reject it as it is.
func Default() *Config {
	bind, err := ParseBind(defaultBind)
	if err != nil {
		panic("config: the default bind is invalid: " + err.Error())
	}
	return &Config{
		Server: Server{
			Name:            instanceName(""),
			Workers:         defaultWorkers,
			Bind:            []Bind{bind},
			Backlog:         defaultBacklog,
			Timeout:         Duration{defaultTimeout},
			GracefulTimeout: Duration{defaultGracefulTimeout},
			BootTimeout:     Duration{defaultBootTimeout},
			KillTimeout:     Duration{defaultKillTimeout},
			MasterSlice:     Duration{defaultMasterSlice},
		},
		Worker: Worker{Ready: ReadyNotify},
	}
}

// applyDefaults sets every key that d does not write to its default.
func applyDefaults(c *Config, d *document, path string) {
	def := Default()
	s, ds := &c.Server, def.Server
	if !d.present("server.name") {
		s.Name = instanceName(path)
	}
	if !d.present("server.workers") {
		s.Workers = ds.Workers
	}
	if !d.present("server.bind") {
		s.Bind = ds.Bind
	}
	if !d.present("server.backlog") {
		s.Backlog = ds.Backlog
	}
	if !d.present("server.timeout") {
		s.Timeout = ds.Timeout
	}
	if !d.present("server.graceful_timeout") {
		s.GracefulTimeout = ds.GracefulTimeout
	}
	if !d.present("server.boot_timeout") {
		s.BootTimeout = ds.BootTimeout
	}
	if !d.present("server.kill_timeout") {
		s.KillTimeout = ds.KillTimeout
	}
	if !d.present("server.master_slice") {
		s.MasterSlice = ds.MasterSlice
	}
	applyAutoscaleDefaults(s, d)
	if !d.present("worker.ready") {
		c.Worker.Ready = def.Worker.Ready
	}
	if !d.present("server.state_dir") {
		s.StateDir = systemdStateDir()
	}
	for i := range c.Singletons {
		sg, key := &c.Singletons[i], keyIndex("singleton", i)
		if !d.present(key + ".ready") {
			sg.Ready = ReadyStarted
		}
		if !d.present(key + ".start") {
			sg.Start = StartAfterReady
		}
	}
	for i := range c.Schedules {
		if !d.present(keyIndex("schedule", i) + ".overlap") {
			c.Schedules[i].Overlap = jobs.OverlapSkip
		}
	}
	for name, list := range c.Hooks {
		for i := range list {
			key := keyIndex(keyJoin("hooks", name), i)
			if !d.present(key + ".timeout") {
				list[i].Timeout = Duration{defaultHookTimeout}
			}
			if !d.present(key + ".on_failure") {
				list[i].OnFailure = OnFailureIgnore
			}
		}
	}
}

// systemdStateDir returns the first directory of $STATE_DIRECTORY, which
// systemd sets from StateDirectory= (a colon-separated list of absolute
// paths), or "" when it is unset.
func systemdStateDir() string {
	dir, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	return dir
}
