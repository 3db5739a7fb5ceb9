package forkctl

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/forkd/forkd/bus"
)

// monitorEvent is one line of `forkctl monitor --json`.
type monitorEvent struct {
	// Time is when forkctl received the signal (RFC 3339, nanoseconds).
	Time time.Time `json:"time"`
	// Sender is the unique bus name of the sending forkd.
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
	conn, err := connect(ctx, opts)
	if err != nil {
		return err
	}
	defer conn.Close()
	match := []dbus.MatchOption{dbus.WithMatchInterface(bus.Interface), dbus.WithMatchObjectPath(bus.ObjectPath)}
	if name != "" {
		match = append(match, dbus.WithMatchSender(bus.Name(name)))
	}
	// A large buffer keeps signals in order (godbus reorders on overflow).
	signals := make(chan *dbus.Signal, 4096)
	conn.Signal(signals)
	if err := conn.AddMatchSignalContext(ctx, match...); err != nil {
		return fmt.Errorf("subscribe to %s signals: %w", bus.Interface, err)
	}
	which := "all forkd instances"
	if name != "" {
		which = fmt.Sprintf("forkd instance %q", name)
	}
	fmt.Fprintf(stderr, "Monitoring the signals of %s on %s.\n", which, busDescription(opts))
	enc := json.NewEncoder(stdout)
	owners := senders{conn: conn, instance: name, known: map[string]string{}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case s, ok := <-signals:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("monitor: connection to %s closed", busDescription(opts))
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
// instance whose well-known name the sender's unique name owns.
type senders struct {
	conn *dbus.Conn
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
