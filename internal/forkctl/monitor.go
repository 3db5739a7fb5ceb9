package forkctl

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/forkd/forkd/bus"
)

// monitorEvent is one line of `forkctl monitor --json`.
type monitorEvent struct {
	// Time is when forkctl received the signal (RFC 3339, nanoseconds).
	Time time.Time `json:"time"`
	// Sender is the unique bus name of the sending forkd; over a
	// peer-to-peer socket, which has no bus names, the instance's
	// well-known name.
	Sender string `json:"sender"`
	// Instance is the instance name: the signal's instance argument, or
	// for the signals without one (the run-once hooks') the instance whose
	// name the sender owns.
	Instance string `json:"instance"`
	// Signal is the signal's name ("OnStarting", "WorkerExit", …).
	Signal string `json:"signal"`
	// Args are the signal's arguments by their names in the interface XML
	// ("arg3" for any the XML does not name).
	Args map[string]any `json:"args"`
}

// signalArgNames returns each Manager1 signal's argument names, from the
// shipped interface XML.
func signalArgNames() (map[string][]string, error) {
	var node introspect.Node
	if err := xml.Unmarshal([]byte(bus.InterfaceXML()), &node); err != nil {
		return nil, fmt.Errorf("parse the interface XML: %w", err)
	}
	names := map[string][]string{}
	for _, iface := range node.Interfaces {
		if iface.Name != bus.Interface {
			continue
		}
		for _, s := range iface.Signals {
			for _, a := range s.Args {
				names[s.Name] = append(names[s.Name], a.Name)
			}
		}
	}
	return names, nil
}

// monitor prints every Manager1 signal from the instance called name (all
// instances when name is "") until ctx is done. Once subscribed it says so
// on stderr, so stdout carries only signals.
func monitor(ctx context.Context, opts options, name string, asJSON bool, stdout, stderr io.Writer) error {
	argNames, err := signalArgNames()
	if err != nil {
		return err
	}
	src, err := subscribe(ctx, opts, name, stderr)
	if err != nil {
		return err
	}
	defer src.close()
	signals := src.signals
	which := "all forkd instances"
	if name != "" {
		which = fmt.Sprintf("forkd instance %q", name)
	}
	fmt.Fprintf(stderr, "Monitoring the signals of %s on %s.\n", which, src.where)
	enc := json.NewEncoder(stdout)
	owners := senders{conn: src.bus, instance: name, known: map[string]string{}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-signals:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("monitor: connection to %s closed", src.where)
			}
			member, found := strings.CutPrefix(s.Name, bus.Interface+".")
			if !found {
				continue
			}
			ev := monitorEvent{Time: time.Now(), Sender: s.Sender, Signal: member, Args: map[string]any{}}
			names := argNames[member]
			var text []string
			for i, v := range s.Body {
				key := "arg" + strconv.Itoa(i)
				if i < len(names) {
					key = names[i]
				}
				ev.Args[key] = v
				if key == "instance" {
					ev.Instance, _ = v.(string)
					continue
				}
				text = append(text, key+"="+formatArg(v))
			}
			if _, ok := ev.Args["instance"]; !ok {
				ev.Instance = owners.lookup(ctx, s.Sender)
			}
			if asJSON {
				err = enc.Encode(ev)
			} else {
				_, err = fmt.Fprintf(stdout, "%s %s %s %s\n", ev.Time.Format("2006-01-02T15:04:05.000Z07:00"),
					orDash(ev.Instance), member, strings.Join(text, " "))
			}
			if err != nil {
				return fmt.Errorf("monitor: write: %w", err)
			}
		}
	}
}

// senders finds which instance sent a signal that does not say: the
// instance whose well-known name the sender's unique name owns (on a
// peer-to-peer socket, the sender is that well-known name).
type senders struct {
	conn *dbus.Conn // the bus; nil peer to peer
	// instance is the one instance monitored ("" for all).
	instance string
	// known maps unique names to instances ("" for a sender that owned no
	// forkd name when it was looked up).
	known map[string]string
}

// lookup returns the instance whose name sender owns, or "" if none.
func (s *senders) lookup(ctx context.Context, sender string) string {
	if s.instance != "" {
		return s.instance // the match only lets its signals through
	}
	if inst, ok := bus.InstanceFromName(sender); ok {
		return inst
	}
	if s.conn == nil {
		return ""
	}
	if inst, ok := s.known[sender]; ok {
		return inst
	}
	s.known[sender] = ""
	found, err := listInstances(ctx, s.conn)
	if err != nil {
		return ""
	}
	for _, f := range found {
		var owner string
		err := s.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, f.busName).Store(&owner)
		if err == nil {
			s.known[owner] = f.name
		}
	}
	return s.known[sender]
}

func formatArg(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// source is where monitor reads signals from: a bus, or the peer-to-peer
// sockets of one or more instances.
type source struct {
	// signals carries the Manager1 signals; it closes when the connections
	// do.
	signals <-chan *dbus.Signal
	// where says what it is connected to, for people.
	where string
	// bus is the bus connection; nil peer to peer.
	bus   *dbus.Conn
	close func()
}

// subscribe subscribes to the Manager1 signals of the instance called name
// (of every instance when name is ""): on the bus, unless --socket names a
// socket, or the bus cannot be reached, or it has no such instance while
// a peer-to-peer socket has (then on the sockets).
func subscribe(ctx context.Context, opts options, name string, stderr io.Writer) (source, error) {
	var found []instance
	if opts.socket != "" {
		in, err := openSocket(ctx, opts.socket, name)
		if err != nil {
			return source{}, err
		}
		found = []instance{in}
	} else {
		conn, err := connect(ctx, opts)
		if err == nil {
			if onBus(ctx, conn, name) {
				return subscribeBus(ctx, conn, opts, name)
			}
			if found, _ = findSockets(ctx, name); len(found) == 0 {
				// Wait on the bus for the instance to come.
				return subscribeBus(ctx, conn, opts, name)
			}
			conn.Close()
		} else if found, err = findSocketsAfter(ctx, name, err); err != nil {
			return source{}, err
		}
	}
	return subscribeSockets(ctx, found, stderr), nil
}

// findSocketsAfter is findSockets after the bus failed with busErr: its
// error says what both attempts ran into.
func findSocketsAfter(ctx context.Context, name string, busErr error) ([]instance, error) {
	found, err := findSockets(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%w;\nand %w", busErr, err)
	}
	return found, nil
}

// onBus reports whether the instance called name (any instance when name
// is "") is on the bus.
func onBus(ctx context.Context, conn *dbus.Conn, name string) bool {
	if name != "" {
		var has bool
		err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.NameHasOwner", 0, bus.Name(name)).Store(&has)
		return err != nil || has // a bus that does not say: use it
	}
	found, err := listInstances(ctx, conn)
	return err != nil || len(found) > 0
}

// subscribeBus subscribes on the bus conn.
func subscribeBus(ctx context.Context, conn *dbus.Conn, opts options, name string) (source, error) {
	match := []dbus.MatchOption{dbus.WithMatchInterface(bus.Interface), dbus.WithMatchObjectPath(bus.ObjectPath)}
	if name != "" {
		match = append(match, dbus.WithMatchSender(bus.Name(name)))
	}
	// A large buffer keeps signals in order (godbus reorders on overflow).
	signals := make(chan *dbus.Signal, 4096)
	conn.Signal(signals)
	if err := conn.AddMatchSignalContext(ctx, match...); err != nil {
		conn.Close()
		return source{}, fmt.Errorf("subscribe to %s signals: %w", bus.Interface, err)
	}
	return source{signals: signals, where: busDescription(opts), bus: conn, close: func() { conn.Close() }}, nil
}

// subscribeSockets merges the signals of the instances in found, each
// connected to its peer-to-peer socket, into one channel, each signal's
// Sender set to its instance's well-known name (a peer-to-peer connection
// has no sender names). When a connection closes — forkd stopped, or
// re-executed itself for an upgrade — it says so on stderr and connects
// again once the socket answers for the same instance, with backoff; the
// channel never closes. close stops it all.
func subscribeSockets(ctx context.Context, found []instance, stderr io.Writer) source {
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan *dbus.Signal, 4096)
	var (
		wg    sync.WaitGroup
		paths []string
		mu    sync.Mutex // stderr, written by the followers
	)
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, format, args...)
	}
	for _, in := range found {
		paths = append(paths, in.socket)
		wg.Add(1)
		go func() {
			defer wg.Done()
			followSocket(ctx, in, out, say)
		}()
	}
	where := "the peer-to-peer socket " + paths[0]
	if len(paths) > 1 {
		where = "the peer-to-peer sockets " + strings.Join(paths, ", ")
	}
	return source{signals: out, where: where, close: func() {
		cancel()
		wg.Wait()
	}}
}

// Bounds of the wait between attempts to connect again to a socket.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 2 * time.Second
)

// followSocket forwards the Manager1 signals of in, connected to its
// socket, to out until ctx is done, connecting again whenever the
// connection closes. It closes the connection it holds when it returns.
func followSocket(ctx context.Context, in instance, out chan<- *dbus.Signal, say func(string, ...any)) {
	for again := false; ; again = true {
		// forkd sends every signal to every peer: no match to add.
		signals := make(chan *dbus.Signal, 4096)
		in.conn.Signal(signals)
		if again {
			say("forkctl: connected to %s again; signals sent meanwhile were missed\n", in.socket)
		}
	forward:
		for {
			select {
			case s, ok := <-signals:
				if !ok {
					break forward
				}
				if s.Path != bus.ObjectPath {
					continue
				}
				s.Sender = in.busName
				select {
				case out <- s:
				case <-ctx.Done():
					in.conn.Close()
					return
				}
			case <-ctx.Done():
				in.conn.Close()
				return
			}
		}
		say("forkctl: connection to %s closed; waiting for forkd %q to serve it again\n", in.socket, in.name)
		for wait := reconnectMin; ; wait = min(2*wait, reconnectMax) {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			next, err := dialSocket(ctx, in.socket)
			if err == nil && next.name == in.name {
				in = next
				break
			}
			if err == nil {
				next.conn.Close()
			}
		}
	}
}
