#!/bin/bash
# install.sh — forkd's install test, run inside a systemd-nspawn container
# booted by install_test.go (as forkd-install.service, after
# multi-user.target). It does what a new user does with the built .deb,
# then purges it and looks for anything left behind. Each check reports
# PASS or FAIL as lib.sh says. The unit's ExecStopPost= saves the journal
# and powers the container off, whatever happens here. The .deb is
# /root/forkd_VERSION_ARCH.deb.

set -u

INSTANCE=demo
SERVICE=forkd@$INSTANCE.service
SOCKET=forkd@$INSTANCE.socket
SOCK=/run/forkd/$INSTANCE.sock
DEMO=/usr/lib/forkd/forkd-demo

. "$(dirname "$0")/lib.sh"

# run runs a command with a deadline, logging it and its output.
run() {
	local out rc
	out=$(timeout 90 "$@" 2>&1)
	rc=$?
	log "$* -> $rc${out:+: $out}"
	return $rc
}

get() { curl -fsS --max-time 30 --unix-socket "$SOCK" http://localhost/ 2>&1; }

# forkd_procs lists the processes running forkd's programs (the cluster sidecar too).
forkd_procs() {
	local exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case $exe in /usr/bin/forkd | /usr/bin/forkctl | /usr/lib/forkd/forkd-cluster | /usr/lib/forkd/forkd-metrics | "$DEMO") echo "${p#/proc/} $exe" ;; esac
	done
}

log "$(systemctl --version | head -n1); $(uname -r)"
pass boot

# 1. apt-get install ./forkd_*.deb: the user, the units, the bus policy.
check_install() {
	cd /root || return
	run env DEBIAN_FRONTEND=noninteractive apt-get install -y ./forkd_*.deb ||
		{ fail install "apt-get install ./forkd_*.deb failed"; return; }
	id forkd >>"$LOG" 2>&1 || { fail install "no user forkd"; return; }
	systemctl cat forkd@.service >/dev/null 2>&1 || { fail install "systemd does not know forkd@.service"; return; }
	[ -f /usr/share/dbus-1/system.d/io.github.forkd.conf ] || { fail install "no D-Bus policy"; return; }
	dpkg -L forkd >/run/forkd-files.txt
	pass install
}

# 2. The sample becomes an instance; socket activation answers.
check_instance() {
	local body
	run cp /etc/forkd/example.toml.sample /etc/forkd/$INSTANCE.toml || { fail instance "copy the sample"; return; }
	run forkctl check /etc/forkd/$INSTANCE.toml || { fail instance "forkctl check rejects the sample"; return; }
	run systemctl enable --now "$SOCKET" || { fail instance "systemctl enable --now $SOCKET failed"; return; }
	[ -L /etc/systemd/system/sockets.target.wants/$SOCKET ] || { fail instance "no sockets.target.wants link after enable"; return; }
	body=$(get) || { fail instance "first request not answered: $body"; return; }
	log "answer: $body"
	[[ $body == *"hello from worker"* ]] || { fail instance "unexpected answer: $body"; return; }
	is_active() { [ "$(systemctl is-active "$SERVICE")" = active ]; }
	wait_for 30 is_active || { fail instance "$SERVICE is $(systemctl is-active "$SERVICE") after a request"; return; }
	pass instance
}

# 3. systemctl reload replaces the workers, and the hooks arrive on the
# system bus as signals.
check_reload_signals() {
	local main old new fresh p mon
	main=$(mainpid)
	wait_for 30 test "$(count "$(workers "$main")")" -ge 2 || { fail reload "workers: [$(workers "$main")], want 2"; return; }
	old=$(workers "$main")
	dbus-monitor --system "type='signal',interface='io.github.forkd.Manager1'" >/run/forkd-monitor.txt 2>&1 &
	mon=$!
	# dbus-monitor is listening once it printed its own NameAcquired.
	monitoring() { grep -q NameAcquired /run/forkd-monitor.txt; }
	wait_for 10 monitoring || log "dbus-monitor: $(cat /run/forkd-monitor.txt)"
	run systemctl reload "$SERVICE" || { kill "$mon"; fail reload "systemctl reload failed"; return; }
	new=$(workers "$main")
	fresh=""
	for p in $new; do [[ " $old " == *" $p "* ]] || fresh="$fresh $p"; done
	log "workers before [$old] after [$new]"
	[ "$(count "$fresh")" -ge 2 ] || { kill "$mon"; fail reload "reload returned with workers [$new], new of them [${fresh# }], before [$old]"; return; }
	got_signals() { grep -q 'member=OnReload' /run/forkd-monitor.txt && grep -q 'member=WhenReady' /run/forkd-monitor.txt; }
	wait_for 10 got_signals
	local ok=$?
	kill "$mon"
	wait "$mon" 2>/dev/null
	log "signals seen: $(grep -o 'member=[A-Za-z]*' /run/forkd-monitor.txt | sort | uniq -c | tr '\n' ' ')"
	[ "$ok" -eq 0 ] || { fail signals "no OnReload and WhenReady signals on the system bus during the reload"; return; }
	pass reload
	pass signals
}

# 4. systemctl stop: nothing of forkd runs.
check_stop() {
	local left
	run systemctl stop "$SOCKET" "$SERVICE" || { fail stop "systemctl stop failed"; return; }
	left=$(forkd_procs)
	[ -z "$left" ] || { fail stop "still running: $left"; return; }
	pass stop
}

# 5. apt-get purge forkd: no unit, link, process, bus policy or file of
# the package; the forkd user stays (Debian keeps system users) but owns
# no file.
check_purge() {
	local left f
	run env DEBIAN_FRONTEND=noninteractive apt-get purge -y forkd || { fail purge "apt-get purge forkd failed"; return; }
	dpkg -s forkd >/dev/null 2>&1 && { fail purge "dpkg still knows forkd: $(dpkg -s forkd | grep Status)"; return; }
	left=$(find /etc/systemd /usr/lib/systemd /run/systemd/system /var/lib/systemd /usr/lib/sysusers.d \
		\( -name 'forkd@*' -o -name 'forkd.*' \) 2>/dev/null)
	[ -z "$left" ] || { fail purge "systemd files or links left: $left"; return; }
	left=$(systemctl list-units --all --no-legend 'forkd@*' 2>&1; systemctl list-unit-files --no-legend 'forkd@*' 2>&1 | grep -v '^0 unit files')
	[ -z "$left" ] || { fail purge "systemd still lists: $left"; return; }
	left=$(forkd_procs)
	[ -z "$left" ] || { fail purge "still running: $left"; return; }
	left=$(ls /usr/share/dbus-1/system.d/io.github.forkd.conf /etc/dbus-1/system.d/io.github.forkd.conf 2>/dev/null)
	[ -z "$left" ] || { fail purge "bus policy left: $left"; return; }
	left=""
	while read -r f; do
		[ -d "$f" ] && continue # a directory other packages share
		{ [ -e "$f" ] || [ -L "$f" ]; } && left="$left $f"
	done </run/forkd-files.txt
	[ -z "$left" ] || { fail purge "files of the package left:$left"; return; }
	left=$(ls -d /usr/lib/forkd /usr/share/doc/forkd /var/lib/forkd /run/forkd 2>/dev/null)
	[ -z "$left" ] || { fail purge "directories left: $left: $(ls -lAR $left 2>&1 | tr '\n' ' ')"; return; }
	# The instance config is the administrator's: it stays, alone.
	left=$(ls -A /etc/forkd 2>/dev/null | grep -vx "$INSTANCE.toml")
	[ -z "$left" ] || { fail purge "/etc/forkd holds more than $INSTANCE.toml: $left"; return; }
	id forkd >>"$LOG" 2>&1 || log "the forkd user is gone (Debian would keep it)"
	left=$(find / -xdev -user forkd 2>/dev/null | grep -v '^/results' | head -n 20)
	[ -z "$left" ] || { fail purge "files owned by forkd left: $left"; return; }
	pass purge
}

check_install
check_instance
check_reload_signals
check_stop
check_purge
log "done"
