// Package e2e tests forkd against real systemd: TestSystemd boots this
// machine's own systemd as PID 1 in a systemd-nspawn container on an overlay
// of /, installs forkd's binaries, units, D-Bus policy and service user
// there, and runs inside.sh — socket activation, status and cgroup, reload
// under load, a rejected reload, a killed master, a drained stop — as a
// oneshot unit that writes "PASS name" / "FAIL name: detail" lines to a
// bind-mounted results folder and powers the container off.
//
//	sudo go test -count=1 -v ./e2e/
//
// It needs root and systemd-nspawn (package systemd-container) and skips,
// saying why, without them or while cmd/forkd, cmd/forkctl or examples/demo
// do not build. FORKD_E2E_BIN=DIR tests prebuilt binaries from DIR instead.
// See docs/systemd.md.
package e2e
