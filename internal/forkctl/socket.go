package forkctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
)

// socketConnectTimeout bounds connecting to a peer-to-peer socket and
// reading the instance's name: a forkd that does not answer within it
// counts as not there.
const socketConnectTimeout = 5 * time.Second

// errNoSocket: no forkd peer-to-peer socket answered.
var errNoSocket = errors.New("no forkd peer-to-peer socket answered")

// dialSocket connects peer to peer to the forkd socket at path and
// authenticates (no Hello: there is no bus); the connection closes when ctx
// is done. It returns the instance the socket serves.
func dialSocket(ctx context.Context, path string) (instance, error) {
	// Until connected, the timer ends the connection's context, which
	// interrupts godbus's handshake; once connected, ctx alone does.
	connCtx, abandon := context.WithCancel(ctx)
	timer := time.AfterFunc(socketConnectTimeout, abandon)
	fail := func(what string, err error) (instance, error) {
		abandon()
		if !timer.Stop() && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %v", socketConnectTimeout)
		}
		return instance{}, fmt.Errorf("%s %s: %w", what, path, err)
	}
	conn, err := dbus.Dial(bus.SocketAddress(path), dbus.WithContext(connCtx))
	if err != nil {
		return fail("connect to", err)
	}
	if err := conn.Auth(nil); err != nil {
		conn.Close()
		return fail("authenticate to", err)
	}
	v, err := conn.Object("", bus.ObjectPath).GetProperty(bus.Interface + ".Instance")
	var name string
	if err == nil {
		err = v.Store(&name)
	}
	if err != nil {
		conn.Close()
		return fail("read the instance name at", err)
	}
	if !timer.Stop() {
		conn.Close()
		return fail("connect to", errors.New("timed out"))
	}
	return instance{name: name, busName: bus.Name(name), conn: conn, socket: path}, nil
}

// findSockets connects to the peer-to-peer socket of the instance called
// name, or of every instance this user can see when name is "", looking
// where bus.SocketPatterns says; with no name, an instance answering in
// $RUNTIME_DIRECTORY is the only one (a command of forkd's own unit means
// that unit's instance). It returns the instances that answered, sorted by
// name, or an error wrapping errNoSocket that says where it looked and
// what it found there.
func findSockets(ctx context.Context, name string) ([]instance, error) {
	patterns := bus.SocketPatterns(name)
	seen := map[string]bool{}
	var (
		found    []instance
		failures []string
	)
	for _, pat := range patterns {
		failures = append(failures, unreachable(pat)...)
		paths, _ := filepath.Glob(pat)
		for _, p := range paths {
			key := p
			if real, err := filepath.EvalSymlinks(p); err == nil {
				key = real
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			in, err := dialSocket(ctx, p)
			switch {
			case err != nil:
				failures = append(failures, err.Error())
			case name != "" && in.name != name:
				in.conn.Close() // $RUNTIME_DIRECTORY's, another instance's
			default:
				found = append(found, in)
			}
		}
		if name == "" && len(found) == 1 && pat == runtimeSocket() {
			return found, nil
		}
	}
	if len(found) == 0 {
		what := "none exists"
		if len(failures) > 0 {
			what = strings.Join(failures, "; ")
		}
		return nil, fmt.Errorf("%w: tried %s (%s)", errNoSocket, strings.Join(patterns, ", "), what)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].name < found[j].name })
	return found, nil
}

// runtimeSocket is the pattern bus.SocketPatterns gives for
// $RUNTIME_DIRECTORY's socket, "" when it is not set.
func runtimeSocket() string {
	if os.Getenv("RUNTIME_DIRECTORY") == "" {
		return ""
	}
	return bus.SocketPatterns("")[0]
}

// unreachable says which sockets that pattern may match this user cannot
// reach: those in a directory it may not enter (the unit's
// RuntimeDirectoryMode=0750), which filepath.Glob skips without a word.
func unreachable(pattern string) []string {
	dirs, _ := filepath.Glob(filepath.Dir(pattern))
	var out []string
	for _, d := range dirs {
		p := filepath.Join(d, filepath.Base(pattern))
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrPermission) {
			out = append(out, fmt.Sprintf("cannot reach %s: permission denied (root, the user forkd and the group forkd may)", p))
		}
	}
	return out
}

// openSocket returns the instance called name (the only one when name is
// "") over its peer-to-peer socket: the one at path when path is set (as
// --socket says), else the one findSockets finds.
func openSocket(ctx context.Context, path, name string) (instance, error) {
	if path != "" {
		in, err := dialSocket(ctx, path)
		if err != nil {
			return instance{}, err
		}
		if name != "" && in.name != name {
			in.conn.Close()
			return instance{}, fmt.Errorf("%w: %q (the socket %s serves %q)", ErrNotRunning, name, path, in.name)
		}
		return in, nil
	}
	found, err := findSockets(ctx, name)
	if err != nil {
		return instance{}, err
	}
	if len(found) == 1 {
		return found[0], nil
	}
	var names []string
	for _, f := range found {
		names = append(names, strconv.Quote(f.name)+" ("+f.socket+")")
		f.conn.Close()
	}
	return instance{}, fmt.Errorf("%w: %s; name one", ErrSeveralInstances, strings.Join(names, ", "))
}

// socketFromEnv returns $FORKCTL_SOCKET, the peer-to-peer socket to use
// when --socket is not given.
func socketFromEnv() string { return os.Getenv("FORKCTL_SOCKET") }
