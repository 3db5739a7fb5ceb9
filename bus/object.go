package bus

import (
	"context"
	_ "embed" // the introspection XML
	"errors"
	"fmt"
	"sort"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/workers"
)

//go:embed io.github.forkd.Manager1.xml
var introspectionXML string

// InterfaceXML returns the D-Bus introspection XML of ObjectPath: the
// shipped io.github.forkd.Manager1.xml, which documents every signal's
// arguments.
func InterfaceXML() string { return introspectionXML }

// wireWorker is one ListWorkers entry, (iutst) on the wire.
type wireWorker struct {
	ID          int32
	PID         uint32
	Generation  uint64
	State       string
	StartedUsec uint64
}

// export registers the object's interfaces on conn. Method calls run on
// godbus's goroutines with ctx = the connection's context, so a call in
// flight ends when the connection or Run does.
func (b *Service) export(conn *dbus.Conn) error {
	ctx := conn.Context()
	path := dbus.ObjectPath(ObjectPath)
	manager := map[string]any{
		"Reload": func() *dbus.Error {
			if b.controller == nil {
				return failed("no controller")
			}
			if err := b.controller.Reload(ctx); err != nil {
				return dbus.NewError(ErrorReloadFailed, []any{err.Error()})
			}
			return nil
		},
		"Upgrade": func() *dbus.Error {
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
		"ListWorkers": func() ([]wireWorker, *dbus.Error) {
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
			out := make([]wireWorker, 0, len(list))
			for _, w := range list {
				var started uint64
				if !w.Started.IsZero() {
					started = uint64(max(w.Started.UnixMicro(), 0))
				}
				out = append(out, wireWorker{ID: int32(w.ID), PID: toUint32(w.PID),
					Generation: w.Generation, State: w.State, StartedUsec: started})
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
