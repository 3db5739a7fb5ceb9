// Package e2e tests forkd against real systemd: TestSystemd boots this
// machine's own systemd as PID 1 in a systemd-nspawn container on an overlay
// of /, installs forkd's binaries, units, D-Bus policy and service user
// there, and runs inside.sh — socket activation, status and cgroup, reload
// under load, a rejected reload, a killed master, a drained stop — as a
// oneshot unit that writes "PASS name" / "FAIL name: detail" lines to a
// bind-mounted results folder and powers the container off.
//
// TestInstall does what a new user does with the built package, in the
// same kind of container: install.sh runs `apt-get install ./forkd_*.deb`,
// turns the sample config into an instance, checks socket activation,
// `systemctl reload` (new workers) and the hook signals on the system bus
// (dbus-monitor), stops the instance, then `apt-get purge forkd` and looks
// for any unit, link, process, bus policy or file of forkd's left behind.
// The .deb comes from `make deb`, or FORKD_E2E_DEB=PATH.
//
// TestVM boots the root TestSystemd boots in a virtual machine instead —
// qemu (emulated, no KVM needed), Debian's kernel, an initramfs of busybox
// that mounts the root over virtio 9p — for the checks that need a kernel
// of their own: a cgroup v2 with the memory and pids controllers, which a
// container cannot have on a host that keeps them in cgroup v1. There it
// runs inside.sh's cgroup checks (max_memory on memory.current, OOM kills
// reported "oom", a fork bomb stopped at pids_max) and the Go tests that
// need such a cgroup (gotests.sh, in a unit with Delegate=yes), and a skip
// fails. It needs qemu-system-x86, busybox-static and linux-image-amd64
// (make deps).
//
//	sudo go test -count=1 -v ./e2e/
//
// It needs root and systemd-nspawn (package systemd-container) and skips,
// saying why, without them or while cmd/forkd, cmd/forkctl or examples/demo
// do not build. FORKD_E2E_BIN=DIR tests prebuilt binaries from DIR instead.
// See docs/systemd.md.
package e2e
