package bus

import (
	"reflect"
	"testing"

	"github.com/godbus/dbus/v5"
)

// TestService_Leadership: LeadershipAcquired and LeadershipLost go out
// with the interface's arguments, and UpdateCluster changes the Cluster
// property with PropertiesChanged.
func TestService_Leadership(t *testing.T) {
	d := startBusTestDaemon(t, busTestDir(t))
	client := dialBusTest(t, d.Address)
	client.subscribe(t)
	if err := client.AddMatchSignal(dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchObjectPath(ObjectPath)); err != nil {
		t.Fatal(err)
	}
	b := New(Options{Instance: "leader", Address: d.Address, Controller: newBusTestController()})
	runBusTest(t, b)
	client.waitOwned(t, b.Name())

	b.EmitLeadershipAcquired("scheduler", 42)
	s := client.next(t, Interface+".LeadershipAcquired")
	if !reflect.DeepEqual(s.Body, []any{"scheduler", uint64(42)}) {
		t.Errorf("LeadershipAcquired body %#v", s.Body)
	}
	b.EmitLeadershipLost("scheduler", "lease not renewed")
	s = client.next(t, Interface+".LeadershipLost")
	if !reflect.DeepEqual(s.Body, []any{"scheduler", "lease not renewed"}) {
		t.Errorf("LeadershipLost body %#v", s.Body)
	}

	b.UpdateCluster("etcd unreachable: no answer in time")
	s = client.next(t, "org.freedesktop.DBus.Properties.PropertiesChanged")
	checkChanged(t, s, map[string]any{"Cluster": "etcd unreachable: no answer in time"})
	var v dbus.Variant
	if err := client.object("leader").Call("org.freedesktop.DBus.Properties.Get", 0, Interface, "Cluster").Store(&v); err != nil {
		t.Fatalf("Get Cluster: %v", err)
	}
	if v.Value() != "etcd unreachable: no answer in time" {
		t.Errorf("Get Cluster = %v", v.Value())
	}
}
