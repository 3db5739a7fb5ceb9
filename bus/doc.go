// Package bus is the D-Bus service of a forkd instance: the object
// ObjectPath with the interface Interface (io.github.forkd.Manager1) that
// the instance exports under its well-known name Name(instance), with its
// methods (Reload, Upgrade, SetWorkers, ListWorkers, RunNow, ListJobs), its
// properties (Instance, State, Generation, Workers, ReadyWorkers,
// DroppedSignals, Cluster) and one signal per hook, plus RequestStats and
// the cluster's LeadershipAcquired and LeadershipLost. InterfaceXML is the shipped
// introspection XML, io.github.forkd.Manager1.xml, installed as
// /usr/share/dbus-1/interfaces/io.github.forkd.Manager1.xml.
//
// The master runs a Service: a hooks.Sink that publishes every event as a
// signal and serves the methods through a Controller (the arbiter; an
// Upgrader for Upgrade, a JobRunner for RunNow and ListJobs). Clients
// such as forkctl dial with Connect and use the names, the error names
// (ErrorReloadFailed, ErrorInvalidArgs, ErrorFailed) and InstanceFromName.
//
// Owning the name needs the D-Bus policy io.github.forkd.conf (shipped in
// systemd/): root and the service user may own the names and call every
// method, anyone may receive the signals and read the properties:
//
//	<policy user="forkd">
//	  <allow own_prefix="io.github.forkd"/>
//	  <allow send_destination_prefix="io.github.forkd"
//	         send_interface="io.github.forkd.Manager1"/>
//	</policy>
//
// The Service also serves the object on a peer-to-peer D-Bus socket
// (Options.Socket; SocketPath says where forkd puts it, SocketPatterns where
// clients look), whether a bus is reachable or not. forkd plays the server
// side of the authentication itself (EXTERNAL, checked against the peer's
// SO_PEERCRED uid), answers the bus driver's Hello, AddMatch and RemoveMatch,
// sends every signal to every peer, and applies the policy above by uid:
// only root, the user "forkd" and forkd's own user may call Reload, Upgrade,
// SetWorkers and RunNow. Clients dial SocketAddress(path) and authenticate,
// without Hello:
//
//	gdbus call --address unix:path=/run/forkd/demo/bus.sock -d io.github.forkd.demo \
//	    -o /io/github/forkd -m org.freedesktop.DBus.Properties.GetAll io.github.forkd.Manager1
//
// From a shell:
//
//	busctl introspect io.github.forkd.demo /io/github/forkd
//	busctl --timeout=5min call io.github.forkd.demo /io/github/forkd io.github.forkd.Manager1 Reload
//	busctl call io.github.forkd.demo /io/github/forkd io.github.forkd.Manager1 RunNow s cleanup
package bus
