// Package config is forkd's TOML schema: the types a config file decodes
// into, strict decoding (an unknown key or a wrong type is an error naming
// file:line:column), defaults and validation.
//
// A minimal config:
//
//	[server]
//	name = "myapp"
//	workers = 4
//	bind = ["tcp://127.0.0.1:8000"]
//
//	[worker]
//	command = "/usr/bin/myapp"
//	args = ["--fd", "3"]
package config

import (
	"time"
)

// Config is one instance's configuration, as decoded from a TOML file.
type Config struct {
	// Path is the file the config was read from ("" when parsed from memory).
	Path string `toml:"-"`
	// Server holds the master's settings.
	Server Server `toml:"server"`
	// Worker describes the program forked N times.
	Worker Worker `toml:"worker"`
}

// Server holds the master's settings; names follow Gunicorn's where the
// meaning is the same.
type Server struct {
	// Name is the instance name (FORKD_INSTANCE, D-Bus name). Default: the
	// config file's base name without ".toml".
	Name string `toml:"name"`
	// Workers is the number of worker processes. Default 1, range 0…4096.
	Workers int `toml:"workers"`
	// Bind lists the addresses forkd binds when systemd passed no sockets.
	// Default ["tcp://127.0.0.1:8000"].
	Bind []Bind `toml:"bind"`
	// Backlog is the listen(2) backlog of sockets forkd binds. Default 2048.
	Backlog int `toml:"backlog"`
	// Timeout is the worker heartbeat timeout (WATCHDOG_USEC); 0 disables.
	// Default 30s.
	Timeout Duration `toml:"timeout"`
	// GracefulTimeout is how long stopping workers may drain before KILL.
	// Default 30s.
	GracefulTimeout Duration `toml:"graceful_timeout"`
	// BootTimeout is how long a worker may take to become ready. Default 30s.
	BootTimeout Duration `toml:"boot_timeout"`
	// KillTimeout is the wait between SIGABRT (or a quick-stop signal) and
	// SIGKILL. Default 5s.
	KillTimeout Duration `toml:"kill_timeout"`
}

// Worker describes the worker program.
type Worker struct {
	// Command is the program: an absolute path, a path relative to Dir, or
	// a name looked up in PATH. Required.
	Command string `toml:"command"`
	// Args are the program's arguments (argv[1:]).
	Args []string `toml:"args"`
	// Env is added to the master's environment for each worker.
	Env map[string]string `toml:"env"`
	// Dir is the worker's working directory. Default: the master's.
	Dir string `toml:"dir"`
	// Ready says when a worker counts as serving: ReadyNotify (it sends
	// READY=1) or ReadyStarted (ReadyDelay after it started). Default notify.
	Ready ReadyMode `toml:"ready"`
	// ReadyDelay is the delay for ReadyStarted. Default 0.
	ReadyDelay Duration `toml:"ready_delay"`
}

// ReadyMode says how forkd learns a worker serves.
type ReadyMode string

// The readiness modes.
const (
	// ReadyNotify: the worker sends READY=1 on NOTIFY_SOCKET and heartbeats
	// with WATCHDOG=1.
	ReadyNotify ReadyMode = "notify"
	// ReadyStarted: the worker is ready ReadyDelay after it started; it is
	// not expected to heartbeat.
	ReadyStarted ReadyMode = "started"
)

// Duration is a time.Duration written in TOML as a Go duration string
// ("30s", "1m30s", "250ms").
type Duration struct{ time.Duration }

// Bind is one listening address: "tcp://host:port" (IPv4, or IPv6 in
// brackets) or "unix:/path". Options follow a "?": mode=0660 for unix
// sockets, name=web for the socket's LISTEN_FDNAMES entry.
type Bind struct {
	// Raw is the string as written.
	Raw string
	// Network is "tcp" or "unix".
	Network string
	// Address is host:port for tcp, the path for unix.
	Address string
	// Mode is the unix socket file's permission bits (0 = leave the umask's).
	Mode uint32
	// Name is the socket's name in LISTEN_FDNAMES ("" = the instance name).
	Name string
}
