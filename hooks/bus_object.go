package hooks

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/godbus/dbus/v5"
)

// busWorker is one ListWorkers entry, (iutst) on the wire.
type busWorker struct {
	ID          int32
	PID         uint32
	Generation  uint64
	State       string
	StartedUsec uint64
}

// export registers the object's interfaces on conn. Method calls run on
// godbus's goroutines with ctx = the connection's context, so a call in
// flight ends when the connection or Run does.
func (b *Bus) export(conn *dbus.Conn) error {
	ctx := conn.Context()
	path := dbus.ObjectPath(BusObjectPath)
	manager := map[string]any{
		"Reload": func() *dbus.Error {
			if b.controller == nil {
				return busFailed("no controller")
			}
			if err := b.controller.Reload(ctx); err != nil {
				return dbus.NewError(BusErrorReloadFailed, []any{err.Error()})
			}
			return nil
		},
		"Upgrade": func() *dbus.Error {
			u, ok := b.controller.(Upgrader)
			if !ok {
				return busFailed("this master cannot upgrade in place")
			}
			if err := u.Upgrade(ctx); err != nil {
				return busFailed(err.Error())
			}
			return nil
		},
		"SetWorkers": func(n uint32) *dbus.Error {
			if n > MaxWorkers {
				return dbus.NewError(BusErrorInvalidArgs,
					[]any{fmt.Sprintf("workers must be 0…%d", MaxWorkers)})
			}
			if b.controller == nil {
				return busFailed("no controller")
			}
			if err := b.controller.SetWorkers(ctx, int(n)); err != nil {
				if errors.Is(err, ErrInvalidArgs) {
					return dbus.NewError(BusErrorInvalidArgs, []any{err.Error()})
				}
				return busFailed(err.Error())
			}
			return nil
		},
		"ListWorkers": func() ([]busWorker, *dbus.Error) {
			if b.controller == nil {
				return nil, busFailed("no controller")
			}
			list, err := b.controller.ListWorkers(ctx)
			if err != nil {
				return nil, busFailed(err.Error())
			}
			sort.SliceStable(list, func(i, j int) bool {
				if list[i].Generation != list[j].Generation {
					return list[i].Generation < list[j].Generation
				}
				return list[i].ID < list[j].ID
			})
			out := make([]busWorker, 0, len(list))
			for _, w := range list {
				var started uint64
				if !w.Started.IsZero() {
					started = uint64(max(w.Started.UnixMicro(), 0))
				}
				out = append(out, busWorker{ID: int32(w.ID), PID: busUint32(w.PID),
					Generation: w.Generation, State: w.State, StartedUsec: started})
			}
			return out, nil
		},
	}
	if err := conn.ExportMethodTable(manager, path, BusInterface); err != nil {
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
func (b *Bus) getAll(ctx context.Context, iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != BusInterface && iface != "" {
		return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownInterface",
			[]any{"no interface " + iface})
	}
	props, err := b.properties(ctx)
	if err != nil {
		return nil, busFailed(err.Error())
	}
	return props, nil
}

func busFailed(msg string) *dbus.Error {
	return dbus.NewError(BusErrorFailed, []any{msg})
}
