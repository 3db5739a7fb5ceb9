package forkctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
)

// Errors resolving which instance a command is about.
var (
	// ErrNoInstance: no forkd instance owns a name on the bus.
	ErrNoInstance = errors.New("control: no forkd instance on the bus")
	// ErrSeveralInstances: INSTANCE was omitted and there is more than one.
	ErrSeveralInstances = errors.New("control: several forkd instances on the bus")
	// ErrNotRunning: the named instance is not on the bus.
	ErrNotRunning = errors.New("control: forkd instance not on the bus")
)

// connect opens a private connection to the bus opts names; it closes
// when ctx is done.
func connect(ctx context.Context, opts options) (*dbus.Conn, error) {
	conn, err := bus.Connect(ctx, opts.address)
	if err != nil && opts.address == "session" && os.Getenv("DBUS_SESSION_BUS_ADDRESS") == "" {
		// godbus found no bus in the user's runtime directory and tried
		// dbus-launch: say what is missing, not only that.
		return nil, fmt.Errorf("connect to the session bus: none found (DBUS_SESSION_BUS_ADDRESS is unset and "+
			"there is no bus socket in the user's runtime directory; %v): use --bus ADDRESS", err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", busDescription(opts), err)
	}
	return conn, nil
}

func busDescription(opts options) string {
	switch opts.address {
	case "":
		return "the system bus"
	case "session":
		return "the session bus"
	}
	return "D-Bus at " + opts.address
}

// instance is a forkd instance on the bus, or on its peer-to-peer
// socket.
type instance struct {
	name    string // the instance name
	busName string // its well-known name
	conn    *dbus.Conn
	// socket is the path of the peer-to-peer socket conn is connected to;
	// "" on a bus.
	socket string
}

func (in instance) object() dbus.BusObject {
	return in.conn.Object(in.busName, bus.ObjectPath)
}

// resolve finds the instance called name, or the only one when name is "".
func resolve(ctx context.Context, conn *dbus.Conn, opts options, name string) (instance, error) {
	if name != "" {
		busName := bus.Name(name)
		var has bool
		err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, busName).Store(&has)
		if err != nil {
			return instance{}, fmt.Errorf("look up %s: %w", busName, err)
		}
		if !has {
			return instance{}, fmt.Errorf("%w: %q (no owner of %s on %s)", ErrNotRunning, name, busName, busDescription(opts))
		}
		return instance{name: name, busName: busName, conn: conn}, nil
	}
	found, err := listInstances(ctx, conn)
	if err != nil {
		return instance{}, err
	}
	switch len(found) {
	case 0:
		return instance{}, fmt.Errorf("%w (%s): is forkd running? Try --user or --bus ADDRESS", ErrNoInstance, busDescription(opts))
	case 1:
		return instance{name: found[0].name, busName: found[0].busName, conn: conn}, nil
	}
	var names []string
	for _, f := range found {
		names = append(names, strconv.Quote(f.name))
	}
	return instance{}, fmt.Errorf("%w: %s; name one", ErrSeveralInstances, strings.Join(names, ", "))
}

// listInstances returns the forkd instances on the bus, sorted by name.
func listInstances(ctx context.Context, conn *dbus.Conn) ([]instance, error) {
	var names []string
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
		return nil, fmt.Errorf("list bus names: %w", err)
	}
	var found []instance
	for _, n := range names {
		if inst, ok := bus.InstanceFromName(n); ok {
			found = append(found, instance{name: inst, busName: n, conn: conn})
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].name < found[j].name })
	return found, nil
}

// callError turns a method call's error into a message for people: the
// D-Bus error's own message, and what to do about access denied.
func callError(what string, in instance, err error) error {
	var de dbus.Error
	if !errors.As(err, &de) {
		return fmt.Errorf("%s %s: %w", what, in.name, err)
	}
	msg := de.Error()
	switch de.Name {
	case "org.freedesktop.DBus.Error.AccessDenied":
		return fmt.Errorf("%s %s: access denied: only root and the forkd user may do this (run with sudo)", what, in.name)
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
		return fmt.Errorf("%s %s: %w (it went away)", what, in.name, ErrNotRunning)
	}
	return fmt.Errorf("%s %s: %s", what, in.name, msg)
}
