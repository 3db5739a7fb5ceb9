// Package forkctl is the forkctl command: the command-line client of
// forkd's D-Bus interface (io.github.forkd.Manager1, see bus.InterfaceXML) and a config
// checker.
//
//	forkctl status              # the only instance: state, listeners, one line per worker
//	forkctl status --watch      # the same, redrawn in place every second
//	forkctl workers myapp       # the live workers of instance "myapp"
//	forkctl reload              # reload and wait; non-zero exit when it failed
//	forkctl scale 8 myapp       # set the target worker count
//	forkctl jobs --json         # the singletons and schedules, as JSON
//	forkctl run cleanup         # run the schedule "cleanup" now
//	forkctl monitor --json      # every hook signal, one JSON object a line
//	forkctl check /etc/forkd/myapp.toml
//
// INSTANCE defaults to the only forkd instance on the bus. The system bus
// is used unless --user (the session bus) or --bus ADDRESS says otherwise.
// When the bus cannot be reached or has no such instance, forkctl falls
// back to the peer-to-peer D-Bus sockets that forkd serves the same object
// on (bus.SocketPatterns); --socket PATH (or $FORKCTL_SOCKET) uses one such
// socket and no bus.
// reload returns once the new generation serves (or the reload failed), so
// `ExecReload=forkctl reload %i` makes systemd wait for the reload where
// Type=notify-reload is not available (systemd before 253).
package forkctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrUsage is wrapped by the errors Main returns for a wrong command line;
// forkctl exits with status 2 for them.
var ErrUsage = errors.New("forkctl: usage")

// usageError is a command-line mistake; it prints as its message and
// matches ErrUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

const usage = `Usage: forkctl [--bus ADDRESS | --user | --socket PATH] COMMAND [ARGS]

Control forkd instances over D-Bus.

Commands:
  status [INSTANCE] [--json] [--watch]
                               the instance (state, generation, uptime, reloads),
                               its listeners' accept queues, one line per worker
                               (state, age, requests, p50/p99, RSS, CPU, heartbeat);
                               --json: the status page as JSON; --watch: redraw
                               every second until interrupted
  workers [INSTANCE]           the live workers
  reload [INSTANCE]            start a new generation and wait until it serves;
                               fails (old generation still serving) when it does not
  upgrade [INSTANCE]           re-execute the master in place (as USR2): same pid,
                               workers keep serving; returns once under way
  scale N [INSTANCE]           set the target number of workers
  jobs [INSTANCE] [--json]     the singletons and schedules: state, pid, last
                               start and result, next due time; --json: an array
  run NAME [INSTANCE]          run the schedule NAME now, as its overlap allows
  monitor [INSTANCE] [--json]  print hook signals as they arrive (all instances
                               when INSTANCE is omitted); --json: one object a line
  check CONFIG                 validate a config file

INSTANCE defaults to the only forkd instance on the bus.

When the bus cannot be reached or has no such instance, forkctl connects to
the instances' peer-to-peer D-Bus sockets instead (bus.sock in
/run/forkd/INSTANCE/ or $XDG_RUNTIME_DIR/forkd/INSTANCE/; with INSTANCE
omitted, only $RUNTIME_DIRECTORY's when it answers), with the same interface.

Options:
  --bus ADDRESS  connect to this D-Bus address (default: the system bus,
                 or $DBUS_SYSTEM_BUS_ADDRESS)
  --user         connect to the session bus
  --socket PATH  connect to this forkd peer-to-peer socket only, no bus
                 (default: $FORKCTL_SOCKET)
  -h, --help     show this help
`

// options are the global command-line options.
type options struct {
	// address is "" for the system bus, "session" or a D-Bus address.
	address string
	// socket is the peer-to-peer socket to use instead of a bus ("" for
	// a bus, falling back to the sockets forkd serves).
	socket string
}

// Main runs forkctl with args (without the program name), writing results
// to stdout and diagnostics to stderr. It returns nil on success, an error
// wrapping ErrUsage for a wrong command line (after printing the usage to
// stderr), and any other error when the command failed; monitor returns
// nil when ctx is done.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := run(ctx, args, stdout, stderr)
	if errors.Is(err, ErrUsage) {
		fmt.Fprint(stderr, usage)
	}
	return err
}

// flagValue returns the value of the option name, given as arg "name=V" or
// as arg "name" followed by V, and the arguments after it; an empty or
// missing value is a usage error saying that name needs what.
func flagValue(name, what, arg string, rest []string) (value string, after []string, err error) {
	if v, ok := strings.CutPrefix(arg, name+"="); ok {
		value, after = v, rest
	} else if len(rest) > 0 {
		value, after = rest[0], rest[1:]
	}
	if value == "" {
		return "", nil, usagef("%s needs %s", name, what)
	}
	return value, after, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts := options{socket: socketFromEnv()}
flags:
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		arg := args[0]
		args = args[1:]
		switch {
		case arg == "-h" || arg == "--help" || arg == "-help":
			_, err := fmt.Fprint(stdout, usage)
			return err
		case arg == "--user":
			opts.address = "session"
		case arg == "--bus" || strings.HasPrefix(arg, "--bus="):
			var err error
			if opts.address, args, err = flagValue("--bus", "an address", arg, args); err != nil {
				return err
			}
		case arg == "--socket" || strings.HasPrefix(arg, "--socket="):
			var err error
			if opts.socket, args, err = flagValue("--socket", "a path", arg, args); err != nil {
				return err
			}
		case arg == "--":
			break flags
		default:
			return usagef("unknown option %s", arg)
		}
	}
	if len(args) == 0 {
		return usagef("no command")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "status":
		var f statusFlags
		pos, err := parseArgs(cmd, args, map[string]*bool{"--json": &f.json, "--watch": &f.watch})
		if err != nil {
			return err
		}
		if len(pos) > 1 {
			return usagef("status takes at most one INSTANCE")
		}
		inst := ""
		if len(pos) == 1 {
			inst = pos[0]
		}
		return showStatus(ctx, opts, inst, f, stdout)
	case "workers":
		inst, err := optionalInstance(cmd, args)
		if err != nil {
			return err
		}
		return listWorkers(ctx, opts, inst, stdout)
	case "reload":
		inst, err := optionalInstance(cmd, args)
		if err != nil {
			return err
		}
		return reload(ctx, opts, inst, stdout)
	case "upgrade":
		inst, err := optionalInstance(cmd, args)
		if err != nil {
			return err
		}
		return upgrade(ctx, opts, inst, stdout)
	case "scale":
		pos, err := parseArgs(cmd, args, nil)
		if err != nil {
			return err
		}
		if len(pos) < 1 || len(pos) > 2 {
			return usagef("scale takes N and an optional INSTANCE")
		}
		n, err := parseWorkers(pos[0])
		if err != nil {
			return err
		}
		inst := ""
		if len(pos) == 2 {
			inst = pos[1]
		}
		return scale(ctx, opts, n, inst, stdout)
	case "jobs":
		var asJSON bool
		pos, err := parseArgs(cmd, args, map[string]*bool{"--json": &asJSON})
		if err != nil {
			return err
		}
		if len(pos) > 1 {
			return usagef("jobs takes at most one INSTANCE")
		}
		inst := ""
		if len(pos) == 1 {
			inst = pos[0]
		}
		return listJobs(ctx, opts, inst, asJSON, stdout)
	case "run":
		pos, err := parseArgs(cmd, args, nil)
		if err != nil {
			return err
		}
		if len(pos) < 1 || len(pos) > 2 || pos[0] == "" {
			return usagef("run takes NAME and an optional INSTANCE")
		}
		inst := ""
		if len(pos) == 2 {
			inst = pos[1]
		}
		return runNow(ctx, opts, pos[0], inst, stdout)
	case "monitor":
		var asJSON bool
		pos, err := parseArgs(cmd, args, map[string]*bool{"--json": &asJSON})
		if err != nil {
			return err
		}
		if len(pos) > 1 {
			return usagef("monitor takes at most one INSTANCE")
		}
		inst := ""
		if len(pos) == 1 {
			inst = pos[0]
		}
		return monitor(ctx, opts, inst, asJSON, stdout, stderr)
	case "check":
		pos, err := parseArgs(cmd, args, nil)
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return usagef("check takes one CONFIG file")
		}
		return check(pos[0], stdout)
	case "help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	}
	return usagef("unknown command %q", cmd)
}

// parseArgs splits args into positional arguments and the boolean flags
// named in flags, which may appear anywhere; "--" ends the flags.
func parseArgs(cmd string, args []string, flags map[string]*bool) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(pos, args[i+1:]...), nil
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			p, ok := flags[a]
			if !ok {
				return nil, usagef("%s: unknown option %s", cmd, a)
			}
			*p = true
			continue
		}
		pos = append(pos, a)
	}
	return pos, nil
}

// optionalInstance parses the [INSTANCE] of commands that take nothing
// else.
func optionalInstance(cmd string, args []string) (string, error) {
	pos, err := parseArgs(cmd, args, nil)
	if err != nil {
		return "", err
	}
	switch len(pos) {
	case 0:
		return "", nil
	case 1:
		return pos[0], nil
	}
	return "", usagef("%s takes at most one INSTANCE", cmd)
}
