package bus

import (
	"context"
	_ "embed" // the introspection XML
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/jobs"
	"github.com/forkd/forkd/workers"
)

//go:embed io.github.forkd.Manager1.xml
var introspectionXML string

// InterfaceXML returns the D-Bus introspection XML of ObjectPath: the
// shipped io.github.forkd.Manager1.xml, which documents every signal's
// arguments.
func InterfaceXML() string { return introspectionXML }

// WorkerEntry is one ListWorkers entry as it is on the wire, (iutsttt):
// the worker's id, pid, generation, state, start time in microseconds
// since the Unix epoch (0 if unknown), then its memory in bytes (its
// cgroup's memory.current, else its resident set size; 0 when unknown)
// and the CPU time it used in microseconds, both as of at most
// workers.UsageInterval ago. A client decodes ListWorkers into a
// []WorkerEntry.
type WorkerEntry struct {
	ID          int32
	PID         uint32
	Generation  uint64
	State       string
	StartedUsec uint64
	MemoryBytes uint64
	CPUUsec     uint64
}

// JobEntry is one ListJobs entry as it is on the wire, (sssuststtss): a
// client decodes ListJobs into a []JobEntry. Times are microseconds since
// the Unix epoch, 0 for none.
type JobEntry struct {
	Name          string
	Kind          string
	State         string
	PID           uint32
	Timing        string
	LastStartUsec uint64
	LastResult    string
	NextDueUsec   uint64
	Starts        uint64
	// Scope is "instance" or "cluster".
	Scope string
	// Holder is the member that holds a cluster job ("" for an instance
	// job, or when none does or it is not known).
	Holder string
}

// ListenerEntry is one Listeners entry as it is on the wire, (ssuu): the
// socket's LISTEN_FDNAMES name, its address, its accept queue (connections
// waiting for a worker) and its backlog. A client decodes the property into
// a []ListenerEntry.
type ListenerEntry struct {
	Name    string
	Address string
	Queue   uint32
	Backlog uint32
}

// unixMicro returns t in microseconds since the Unix epoch, 0 for the zero
// time (or any time before the epoch).
func unixMicro(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(t.UnixMicro(), 0))
}

// jobOrder sorts ListJobs' entries: singletons, then schedules, each by
// name.
func jobOrder(list []jobs.Info) {
	rank := func(kind string) int {
		switch kind {
		case jobs.KindSingleton:
			return 0
		case jobs.KindSchedule:
			return 1
		}
		return 2
	}
	sort.SliceStable(list, func(i, j int) bool {
		if ri, rj := rank(list[i].Kind), rank(list[j].Kind); ri != rj {
			return ri < rj
		}
		return list[i].Name < list[j].Name
	})
}

// export registers the object's interfaces on conn. Method calls run on
// godbus's goroutines with ctx = the connection's context, so a call in
// flight ends when the connection or Run does. Unless mayChange, the
// methods that change the instance (Reload, Upgrade, SetWorkers, RunNow)
// answer AccessDenied, as the D-Bus policy does for other users on the
// system bus; on the bus, mayChange is true and the policy decides.
func (b *Service) export(conn *dbus.Conn, mayChange bool) error {
	ctx := conn.Context()
	path := dbus.ObjectPath(ObjectPath)
	denied := func(member string) *dbus.Error {
		if mayChange {
			return nil
		}
		return dbus.NewError("org.freedesktop.DBus.Error.AccessDenied",
			[]any{member + ": only root and the forkd user may call it"})
	}
	manager := map[string]any{
		"Reload": func() *dbus.Error {
			if err := denied("Reload"); err != nil {
				return err
			}
			if b.controller == nil {
				return failed("no controller")
			}
			if err := b.controller.Reload(ctx); err != nil {
				return dbus.NewError(ErrorReloadFailed, []any{err.Error()})
			}
			return nil
		},
		"Upgrade": func() *dbus.Error {
			if err := denied("Upgrade"); err != nil {
				return err
			}
			u, ok := b.controller.(Upgrader)
			if !ok {
				return failed("this master cannot upgrade in place")
			}
			if err := u.Upgrade(ctx); err != nil {
				return failed(err.Error())
			}
			return nil
		},
		"SetWorkers": func(n uint32) *dbus.Error {
			if err := denied("SetWorkers"); err != nil {
				return err
			}
			if n > config.MaxWorkers {
				return dbus.NewError(ErrorInvalidArgs,
					[]any{fmt.Sprintf("workers must be 0…%d", config.MaxWorkers)})
			}
			if b.controller == nil {
				return failed("no controller")
			}
			if err := b.controller.SetWorkers(ctx, int(n)); err != nil {
				if errors.Is(err, workers.ErrOutOfRange) {
					return dbus.NewError(ErrorInvalidArgs, []any{err.Error()})
				}
				return failed(err.Error())
			}
			return nil
		},
		"ListWorkers": func() ([]WorkerEntry, *dbus.Error) {
			list, derr := b.listWorkers(ctx)
			if derr != nil {
				return nil, derr
			}
			out := make([]WorkerEntry, 0, len(list))
			for _, w := range list {
				out = append(out, WorkerEntry{ID: int32(w.ID), PID: toUint32(w.PID), Generation: w.Generation,
					State: w.State, StartedUsec: unixMicro(w.Started), MemoryBytes: w.Memory,
					CPUUsec: uint64(max(w.CPU.Microseconds(), 0))})
			}
			return out, nil
		},
		"Details": func() (string, *dbus.Error) {
			d, ok := b.controller.(Detailer)
			if !ok {
				return "", dbus.NewError("org.freedesktop.DBus.Error.UnknownMethod",
					[]any{"this master has no status page"})
			}
			page, err := d.Details(ctx)
			if err != nil {
				return "", failed(err.Error())
			}
			return string(page), nil
		},
		"RunNow": func(name string) *dbus.Error {
			if err := denied("RunNow"); err != nil {
				return err
			}
			unknown := dbus.NewError(ErrorInvalidArgs,
				[]any{fmt.Sprintf("no singleton or schedule named %q", name)})
			r, ok := b.controller.(JobRunner)
			if !ok || name == "" {
				return unknown
			}
			if err := r.RunNow(ctx, name); err != nil {
				if errors.Is(err, jobs.ErrUnknown) {
					return unknown
				}
				return failed(err.Error())
			}
			return nil
		},
		"ListJobs": func() ([]JobEntry, *dbus.Error) {
			r, ok := b.controller.(JobRunner)
			if !ok {
				return []JobEntry{}, nil
			}
			list, err := r.ListJobs(ctx)
			if err != nil {
				return nil, failed(err.Error())
			}
			list = slices.Clone(list)
			jobOrder(list)
			out := make([]JobEntry, 0, len(list))
			for _, j := range list {
				out = append(out, JobEntry{Name: j.Name, Kind: j.Kind, State: j.State, PID: toUint32(j.PID),
					Timing: j.Timing, LastStartUsec: unixMicro(j.LastStart), LastResult: j.LastResult,
					NextDueUsec: unixMicro(j.NextDue), Starts: uint64(max(j.Starts, 0)), Scope: j.Scope,
					Holder: j.Holder})
			}
			return out, nil
		},
	}
	if err := conn.ExportMethodTable(manager, path, Interface); err != nil {
		return err
	}
	props := map[string]any{
		"Get": func(iface, name string) (dbus.Variant, *dbus.Error) {
			all, derr := b.getAll(ctx, iface)
			if derr != nil {
				return dbus.Variant{}, derr
			}
			v, ok := all[name]
			if !ok {
				return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty",
					[]any{"no property " + name + " on " + iface})
			}
			return v, nil
		},
		"GetAll": func(iface string) (map[string]dbus.Variant, *dbus.Error) {
			return b.getAll(ctx, iface)
		},
		"Set": func(iface, name string, _ dbus.Variant) *dbus.Error {
			return dbus.NewError("org.freedesktop.DBus.Error.PropertyReadOnly",
				[]any{"property " + name + " is read-only"})
		},
	}
	if err := conn.ExportMethodTable(props, path, "org.freedesktop.DBus.Properties"); err != nil {
		return err
	}
	introspect := map[string]any{
		"Introspect": func() (string, *dbus.Error) { return introspectionXML, nil },
	}
	return conn.ExportMethodTable(introspect, path, "org.freedesktop.DBus.Introspectable")
}

// getAll serves Properties.GetAll.
func (b *Service) getAll(ctx context.Context, iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != Interface && iface != "" {
		return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownInterface",
			[]any{"no interface " + iface})
	}
	props, err := b.properties(ctx)
	if err != nil {
		return nil, failed(err.Error())
	}
	return props, nil
}

func failed(msg string) *dbus.Error {
	return dbus.NewError(ErrorFailed, []any{msg})
}

// listWorkers asks the controller for the live workers, by generation then
// id, as ListWorkers returns them.
func (b *Service) listWorkers(ctx context.Context) ([]workers.Info, *dbus.Error) {
	if b.controller == nil {
		return nil, failed("no controller")
	}
	list, err := b.controller.ListWorkers(ctx)
	if err != nil {
		return nil, failed(err.Error())
	}
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Generation != list[j].Generation {
			return list[i].Generation < list[j].Generation
		}
		return list[i].ID < list[j].ID
	})
	return list, nil
}
