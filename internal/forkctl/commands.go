package forkctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/config"
)

// open connects and resolves the instance called name (the only one when
// name is ""); the caller closes the connection. With --socket it connects
// to that peer-to-peer socket only. Otherwise it tries the bus, and falls
// back to the instances' peer-to-peer sockets when the bus cannot be
// reached or has no such instance; when both fail, the error says what
// each attempt ran into.
func open(ctx context.Context, opts options, name string) (instance, error) {
	if opts.socket != "" {
		return openSocket(ctx, opts.socket, name)
	}
	conn, err := connect(ctx, opts)
	if err == nil {
		var in instance
		if in, err = resolve(ctx, conn, opts, name); err == nil {
			return in, nil
		}
		conn.Close()
		if !errors.Is(err, ErrNoInstance) && !errors.Is(err, ErrNotRunning) {
			return instance{}, err
		}
	}
	in, serr := openSocket(ctx, "", name)
	if serr == nil {
		return in, nil
	}
	if errors.Is(serr, ErrSeveralInstances) {
		return instance{}, serr
	}
	return instance{}, fmt.Errorf("%w;\nand %w", err, serr)
}

// properties reads every Manager1 property of in.
func properties(ctx context.Context, in instance) (map[string]dbus.Variant, error) {
	var props map[string]dbus.Variant
	err := in.object().CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, bus.Interface).Store(&props)
	if err != nil {
		return nil, callError("read the status of", in, err)
	}
	return props, nil
}

// worker is one ListWorkers entry of a forkd that predates the workers'
// memory and CPU, (iutst) on the wire.
type worker struct {
	ID          int32
	PID         uint32
	Generation  uint64
	State       string
	StartedUsec uint64
}

func listWorkers(ctx context.Context, opts options, name string, stdout io.Writer) error {
	in, err := open(ctx, opts, name)
	if err != nil {
		return err
	}
	defer in.conn.Close()
	call := in.object().CallWithContext(ctx, bus.Interface+".ListWorkers", 0)
	var list []bus.WorkerEntry
	err = call.Store(&list)
	if call.Err == nil && err != nil {
		// A forkd that predates the workers' memory and CPU: (iutst).
		var old []worker
		if call.Store(&old) == nil {
			list, err = list[:0], nil
			for _, o := range old {
				list = append(list, bus.WorkerEntry{ID: o.ID, PID: o.PID, Generation: o.Generation, State: o.State, StartedUsec: o.StartedUsec})
			}
		}
	}
	if err != nil {
		return callError("list the workers of", in, err)
	}
	now := time.Now()
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tPID\tGENERATION\tSTATE\tSTARTED\tUPTIME\tMEMORY\tCPU")
	for _, wk := range list {
		started, uptime := "-", "-"
		if wk.StartedUsec != 0 {
			t := time.UnixMicro(int64(wk.StartedUsec))
			started = t.Format(time.DateTime)
			uptime = now.Sub(t).Truncate(time.Second).String()
		}
		mem, cpu := "-", "-"
		if wk.MemoryBytes != 0 {
			mem = bytesText(wk.MemoryBytes)
		}
		if wk.CPUUsec != 0 {
			cpu = (time.Duration(wk.CPUUsec) * time.Microsecond).Truncate(time.Millisecond).String()
		}
		fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", wk.ID, wk.PID, wk.Generation, wk.State, started, uptime, mem, cpu)
	}
	return w.Flush()
}

// bytesText writes n bytes with a 1024-based unit and one decimal:
// "812K", "52.3M", "1.2G".
func bytesText(n uint64) string {
	v, unit := float64(n), ""
	for _, u := range []string{"K", "M", "G", "T"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	if unit == "" || v >= 100 || v == float64(int64(v)) {
		return fmt.Sprintf("%.0f%s", v, unit)
	}
	return fmt.Sprintf("%.1f%s", v, unit)
}

func reload(ctx context.Context, opts options, name string, stdout io.Writer) error {
	in, err := open(ctx, opts, name)
	if err != nil {
		return err
	}
	defer in.conn.Close()
	// No timeout but ctx: a reload lasts as long as the new workers take
	// to boot.
	if err := in.object().CallWithContext(ctx, bus.Interface+".Reload", 0).Err; err != nil {
		return callError("reload", in, err)
	}
	var gen uint64
	if v, err := in.object().GetProperty(bus.Interface + ".Generation"); err == nil && v.Store(&gen) == nil {
		_, err := fmt.Fprintf(stdout, "%s: reloaded, generation %d serving\n", in.name, gen)
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: reloaded\n", in.name)
	return err
}

func upgrade(ctx context.Context, opts options, name string, stdout io.Writer) error {
	in, err := open(ctx, opts, name)
	if err != nil {
		return err
	}
	defer in.conn.Close()
	// The master may exec before its reply leaves: then the bus answers
	// NoReply, and the upgrade is under way once the new master holds the
	// instance's name again.
	owners := make(chan *dbus.Signal, 8)
	in.conn.Signal(owners)
	defer in.conn.RemoveSignal(owners)
	_ = in.conn.AddMatchSignalContext(ctx, dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, in.busName))
	err = in.object().CallWithContext(ctx, bus.Interface+".Upgrade", 0).Err
	var de dbus.Error
	if err != nil && in.socket != "" && !errors.As(err, &de) && ctx.Err() == nil {
		// Peer to peer, the master's exec closes the connection before
		// its reply leaves: the upgrade is under way.
		_, err = fmt.Fprintf(stdout, "%s: upgrade under way (the master closed the connection as it re-executed)\n", in.name)
		return err
	}
	if errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NoReply" {
		wctx, cancel := context.WithTimeout(ctx, upgradeWait)
		err = waitNewOwner(wctx, in.busName, owners)
		cancel()
	}
	if err != nil {
		return callError("upgrade", in, err)
	}
	_, err = fmt.Fprintf(stdout, "%s: upgrade under way (the master re-executes in place)\n", in.name)
	return err
}

// upgradeWait bounds how long upgrade waits for the new master to take the
// instance's name when the old one exec'd before its reply left.
const upgradeWait = 30 * time.Second

// waitNewOwner waits until NameOwnerChanged on owners gives name a new
// owner, or ctx is done.
func waitNewOwner(ctx context.Context, name string, owners <-chan *dbus.Signal) error {
	for {
		select {
		case s := <-owners:
			if s.Name != "org.freedesktop.DBus.NameOwnerChanged" || len(s.Body) != 3 {
				continue
			}
			if n, _ := s.Body[0].(string); n != name {
				continue
			}
			if owner, _ := s.Body[2].(string); owner != "" {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("no reply, and no new master took %s: %w", name, ctx.Err())
		}
	}
}

// parseWorkers parses scale's N.
func parseWorkers(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > config.MaxWorkers {
		return 0, usagef("scale: N must be a number of workers, 0…%d, not %q", config.MaxWorkers, s)
	}
	return uint32(n), nil
}

func scale(ctx context.Context, opts options, n uint32, name string, stdout io.Writer) error {
	in, err := open(ctx, opts, name)
	if err != nil {
		return err
	}
	defer in.conn.Close()
	if err := in.object().CallWithContext(ctx, bus.Interface+".SetWorkers", 0, n).Err; err != nil {
		return callError("scale", in, err)
	}
	_, err = fmt.Fprintf(stdout, "%s: workers set to %d\n", in.name, n)
	return err
}

// check validates a config file and summarizes it.
func check(path string, stdout io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("check %s:\n%w", path, err)
	}
	var binds []string
	for _, b := range cfg.Server.Bind {
		binds = append(binds, b.String())
	}
	_, err = fmt.Fprintf(stdout, "%s: ok: instance %q, %s, command %s, bind %s\n",
		path, cfg.Server.Name, config.Workers(cfg.Server.Workers), cfg.Worker.Command, strings.Join(binds, " "))
	return err
}
