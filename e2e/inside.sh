#!/bin/bash
# inside.sh — forkd's end-to-end checks, run inside a systemd-nspawn
# container booted by e2e_test.go (as forkd-e2e.service, after
# multi-user.target). Each check reports PASS, FAIL or SKIP as lib.sh
# says. The unit's ExecStopPost= saves the journal and powers the container
# off, whatever happens here.
#
# Installed by the test: /usr/bin/{forkd,forkctl,forkd-demo},
# /etc/systemd/system/forkd@.{service,socket} with a drop-in that makes
# forkd@demo.socket listen on 127.0.0.1:18080, /etc/forkd/demo.toml (4
# workers of forkd-demo), the D-Bus policy and the sysusers.d entry.

set -u

URL=http://127.0.0.1:18080/
INSTANCE=demo
SERVICE=forkd@$INSTANCE.service
SOCKET=forkd@$INSTANCE.socket
CONFIG=/etc/forkd/$INSTANCE.toml
DEMO=/usr/bin/forkd-demo

. "$(dirname "$0")/lib.sh"

# sctl runs systemctl with a deadline, logging the command and its output.
sctl() {
	local out rc
	out=$(timeout 90 systemctl "$@" 2>&1)
	rc=$?
	log "systemctl $* -> $rc${out:+: $out}"
	return $rc
}

# get fetches URL once; the first request may have to wait for the service
# to start, hence the generous --max-time.
get() { curl -fsS --max-time 30 "$URL" 2>&1; }

# alive prints those of the pids in $1 that still exist.
alive() {
	local p out=""
	for p in $1; do [ -d "/proc/$p" ] && out="$out $p"; done
	echo "${out# }"
}

is_active() { [ "$(systemctl is-active "$1")" = active ]; }

# field extracts "pid P" or "generation G" from a forkd-demo answer.
field() { sed -n "s/.*$1 \([0-9]\+\).*/\1/p" <<<"$2" | head -n1; }

log "$(systemctl --version | head -n1); $(uname -r)"
pass boot

if ! [ -x /usr/bin/forkd ] || ! [ -x "$DEMO" ]; then
	fail install "forkd or forkd-demo is missing from /usr/bin"
	exit 0
fi
id forkd >>"$LOG" 2>&1 || log "no user forkd (systemd-sysusers did not create it)"

# 1. Socket activation: the socket unit alone starts nothing; the first
# connection starts the service and is answered.
check_activation() {
	local state body
	sctl start "$SOCKET" || { fail activation "systemctl start $SOCKET failed"; return; }
	state=$(systemctl is-active "$SERVICE")
	[ "$state" = inactive ] || { fail activation "after starting the socket the service is $state, want inactive"; return; }
	body=$(get) || { fail activation "first request not answered: $body"; return; }
	log "first answer: $body"
	[[ $body == *"hello from worker"* ]] || { fail activation "unexpected answer: $body"; return; }
	# The first worker may answer before all of them are ready, that is
	# before forkd sends READY=1 and the service leaves "activating".
	wait_for 30 is_active "$SERVICE" || { fail activation "after the first request the service is $(systemctl is-active "$SERVICE"), want active"; return; }
	pass activation
}

# 2. Status and cgroup: forkd's STATUS= is shown, MainPID is forkd, and the
# workers are forkd's children in the service's cgroup.
check_status() {
	local main status exe cg ws p
	main=$(mainpid)
	status=$(systemctl show -p StatusText --value "$SERVICE")
	log "MainPID=$main StatusText=$status"
	[ -n "$status" ] || { fail status "StatusText is empty: forkd sent no STATUS="; return; }
	[ "${main:-0}" -gt 0 ] || { fail status "no MainPID"; return; }
	exe=$(readlink "/proc/$main/exe")
	[ "$exe" = /usr/bin/forkd ] || { fail status "MainPID $main runs $exe, want /usr/bin/forkd"; return; }
	wait_for 30 test "$(count "$(workers "$main")")" -ge 4 || { fail status "forkd has workers [$(workers "$main")], want 4"; return; }
	ws=$(workers "$main")
	cg=$(systemctl show -p ControlGroup --value "$SERVICE")
	log "workers: $ws; ControlGroup=$cg"
	[ -n "$cg" ] || { fail status "no ControlGroup"; return; }
	for p in $main $ws; do
		grep -q ":$cg\(/[^/]*\)\?\$" "/proc/$p/cgroup" || { fail status "pid $p is not in $cg: $(tr '\n' ' ' <"/proc/$p/cgroup")"; return; }
	done
	# With cgroup v2 and Delegate=, forkd runs in the leaf master and each
	# worker in a cgroup of its own beside it.
	if [ "$(sed -n 's/^0:://p' "/proc/$main/cgroup")" = "$cg/master" ]; then
		for p in $ws; do
			case $(sed -n 's/^0:://p' "/proc/$p/cgroup") in
			"$cg"/worker-*) ;;
			*) fail status "forkd runs in $cg/master, worker $p in $(sed -n 's/^0:://p' "/proc/$p/cgroup"), want $cg/worker-…"; return ;;
			esac
		done
		log "a cgroup per worker under $cg"
	fi
	[ "$(count "$ws")" -eq 4 ] || { fail status "forkd has $(count "$ws") workers [$ws], want 4"; return; }
	pass status
}

# 3. Reload: `systemctl reload` returns when a new generation serves, and
# requests during the reload all succeed.
check_reload() {
	local main old new fresh body gen0 gen1 pid1 p loop stop=/run/forkd-e2e-stop n bad rc
	main=$(mainpid)
	old=$(workers "$main")
	body=$(get) || { fail reload "not serving before the reload: $body"; return; }
	gen0=$(field generation "$body")
	rm -f "$stop" /run/forkd-e2e-count
	# Requests back to back from before the reload until 20 after it
	# returned (at most 3000).
	(
		n=0 bad=0 after=0
		while [ "$after" -lt 20 ] && [ "$n" -lt 3000 ]; do
			curl -fsS --max-time 5 -o /dev/null "$URL" 2>>"$LOG" || bad=$((bad + 1))
			n=$((n + 1))
			echo "$n" >/run/forkd-e2e-count
			[ -e "$stop" ] && after=$((after + 1))
		done
		echo "$n $bad" >/run/forkd-e2e-loop
	) &
	loop=$!
	started() { [ "$(cat /run/forkd-e2e-count 2>/dev/null || echo 0)" -ge 20 ]; }
	wait_for 30 started || log "the request loop is slow: $(cat /run/forkd-e2e-count 2>/dev/null) requests"
	sctl reload "$SERVICE"
	rc=$?
	new=$(workers "$main")
	body=$(get)
	touch "$stop"
	wait "$loop"
	read -r n bad </run/forkd-e2e-loop
	log "reload rc=$rc; workers before [$old] after [$new]; $n requests, $bad failed; answer after: $body"
	[ "$rc" -eq 0 ] || { fail reload "systemctl reload exited $rc"; return; }
	fresh=""
	for p in $new; do [[ " $old " == *" $p "* ]] || fresh="$fresh $p"; done
	[ "$(count "$fresh")" -ge 4 ] || { fail reload "when reload returned, forkd had workers [$new], of which [${fresh# }] new; before: [$old]"; return; }
	pid1=$(field pid "$body")
	gen1=$(field generation "$body")
	[[ " $old " != *" $pid1 "* ]] || { fail reload "after reload returned, an old worker (pid $pid1) answered: $body"; return; }
	[ -n "$gen0" ] && [ -n "$gen1" ] || { fail reload "no generation in the answers (before: $gen0, after: $gen1)"; return; }
	[ "$gen1" -gt "$gen0" ] || { fail reload "generation $gen0 before, $gen1 after"; return; }
	[ "$n" -gt 0 ] && [ "$bad" -eq 0 ] || { fail reload "$bad of $n requests during the reload failed"; return; }
	[ "$(mainpid)" = "$main" ] || { fail reload "MainPID changed from $main to $(mainpid)"; return; }
	pass reload
}

# 4. A reload with a broken config fails visibly and keeps the old
# generation serving.
check_reload_invalid() {
	local main old now since body rc journal
	main=$(mainpid)
	old=$(workers "$main")
	cp "$CONFIG" /run/forkd-e2e-config.bak
	printf '\n[server.frobnicate]\nwidgets = "yes"\n' >>"$CONFIG"
	since=$(date '+%Y-%m-%d %H:%M:%S')
	sctl reload "$SERVICE"
	rc=$?
	now=$(workers "$main")
	body=$(get)
	cp /run/forkd-e2e-config.bak "$CONFIG"
	journal=$(journalctl -u "$SERVICE" --since "$since" --no-pager -o cat 2>&1)
	log "invalid reload rc=$rc; workers before [$old] after [$now]; answer: $body"
	log "journal lines about the bad key: $(grep -i frobnicate <<<"$journal")"
	[ "$rc" -ne 0 ] || { fail reload-invalid "systemctl reload succeeded with an invalid config"; return; }
	grep -q frobnicate <<<"$journal" || { fail reload-invalid "the journal of $SERVICE does not name the bad key (frobnicate)"; return; }
	[ "$now" = "$old" ] || { fail reload-invalid "workers changed from [$old] to [$now]"; return; }
	[[ $body == *"hello from worker"* ]] || { fail reload-invalid "not serving after the failed reload: $body"; return; }
	[ "$(systemctl is-active "$SERVICE")" = active ] || { fail reload-invalid "service is $(systemctl is-active "$SERVICE") after the failed reload"; return; }
	status_says() { [[ $(systemctl show -p StatusText --value "$SERVICE") == *"last reload failed"*frobnicate* ]]; }
	wait_for 10 status_says || { fail reload-invalid "STATUS= does not report the failed reload: $(systemctl show -p StatusText --value "$SERVICE")"; return; }
	pass reload-invalid
}

# 5. SIGKILL to the master: systemd restarts it on the same socket, and no
# worker of the dead master survives it.
check_kill() {
	local main old body
	main=$(mainpid)
	old=$(workers "$main")
	sctl kill --signal=KILL --kill-who=main "$SERVICE" || { fail kill "systemctl kill failed"; return; }
	new_main() { local m; m=$(mainpid); [ "${m:-0}" -gt 0 ] && [ "$m" != "$main" ] && [ "$(systemctl is-active "$SERVICE")" = active ]; }
	wait_for 60 new_main || { fail kill "no new MainPID after killing $main (MainPID=$(mainpid), $(systemctl is-active "$SERVICE"))"; return; }
	body=$(get) || { fail kill "not answered after the restart: $body"; return; }
	[ "$(systemctl is-active "$SOCKET")" = active ] || { fail kill "socket unit is $(systemctl is-active "$SOCKET")"; return; }
	none_left() { [ -z "$(alive "$old")" ]; }
	wait_for 30 none_left || { fail kill "workers of the killed master still run: [$(alive "$old")]"; return; }
	log "killed master $main, new master $(mainpid) with [$(workers "$(mainpid)")]; answer: $body"
	pass kill
}

# 6. Stopping the service drains the workers and leaves the socket
# listening; the next connection starts the service again.
check_upgrade() {
	# In-place upgrade (USR2 / forkctl upgrade): same MainPID, same workers,
	# requests answered throughout.
	local main old new body i
	main=$(mainpid)
	old=$(workers "$main")
	forkctl upgrade "$INSTANCE" >>"$LOG" 2>&1 || { fail upgrade "forkctl upgrade failed"; return; }
	upgraded() { journalctl -q -u "$SERVICE" --since=-30s -g "upgraded: adopted workers" | grep -q .; }
	wait_for 30 upgraded || { fail upgrade "no 'adopted workers' in the journal"; return; }
	for i in 1 2 3 4 5; do body=$(get) || { fail upgrade "request $i failed after the upgrade: $body"; return; }; done
	new=$(workers "$(mainpid)")
	[ "$(mainpid)" = "$main" ] || { fail upgrade "MainPID changed: $main -> $(mainpid)"; return; }
	[ "$new" = "$old" ] || { fail upgrade "workers changed: [$old] -> [$new]"; return; }
	log "upgraded in place: MainPID $main, workers [$new]"
	pass upgrade
}

check_fdstore() {
	# Without a socket unit forkd binds the address itself and hands the
	# socket to systemd's fd store (FDSTORE=1); when the master dies and
	# Restart= brings it back, the socket comes back as LISTEN_FDS: no
	# connection is refused meanwhile.
	local svc=forkd@store.service url=http://127.0.0.1:18081/ main fails=0 i body
	sed -e 's/^name = .*/name = "store"/' -e 's|127.0.0.1:18080|127.0.0.1:18081|' "$CONFIG" >/etc/forkd/store.toml
	sctl mask forkd@store.socket >>"$LOG" 2>&1
	sctl start "$svc" || { fail fdstore "systemctl start $svc failed"; return; }
	body=$(curl -fsS --max-time 10 "$url" 2>&1) || { fail fdstore "not serving on 127.0.0.1:18081: $body"; return; }
	main=$(systemctl show -p MainPID --value "$svc")
	[ "$(systemctl show -p NFileDescriptorStore --value "$svc")" -ge 1 ] 2>/dev/null ||
		log "NFileDescriptorStore=$(systemctl show -p NFileDescriptorStore --value "$svc") (property may be missing on this systemd)"
	sctl kill --signal=KILL --kill-who=main "$svc"
	for i in $(seq 1 60); do
		curl -fsS --max-time 10 "$url" >/dev/null 2>&1 || fails=$((fails + 1))
	done
	restarted() { local m; m=$(systemctl show -p MainPID --value "$svc"); [ "${m:-0}" -gt 0 ] && [ "$m" != "$main" ]; }
	wait_for 30 restarted || { fail fdstore "not restarted after killing $main"; return; }
	journalctl -u "$svc" --no-pager -o cat | grep -q 'from_systemd=true' ||
		{ fail fdstore "the restarted master did not take its socket back from the fd store"; return; }
	log "fd store: master $main killed, $(systemctl show -p MainPID --value "$svc") took the socket back; 60 requests, $fails failed"
	sctl stop "$svc"
	[ "$fails" -eq 0 ] || { fail fdstore "$fails of 60 requests failed across the restart"; return; }
	pass fdstore
}

check_jobs() {
	# A [[singleton]] and a 1s [[schedule]] under systemd: one singleton
	# process, kept by a reload, gone with the service; the runs' output in
	# the journal with the run's fields.
	local svc=forkd@jobs.service url=http://127.0.0.1:18082/ main single again runs
	{
		sed -e 's/^name = .*/name = "jobs"/' -e 's|127.0.0.1:18080|127.0.0.1:18082|' "$CONFIG"
		printf '\n[[singleton]]\nname = "keeper"\ncommand = "/bin/sleep"\nargs = ["1000"]\n'
		printf '\n[[schedule]]\nname = "tick"\nevery = "1s"\npersistent = true\ncommand = "/bin/sh"\nargs = ["-c", "echo tick $FORKD_RUN_ID"]\n'
	} >/etc/forkd/jobs.toml
	sctl mask forkd@jobs.socket >>"$LOG" 2>&1
	sctl start "$svc" || { fail jobs "systemctl start $svc failed"; return; }
	curl -fsS --max-time 10 "$url" >/dev/null 2>&1 || { fail jobs "not serving on 127.0.0.1:18082"; return; }
	main=$(systemctl show -p MainPID --value "$svc")
	sleepers() { pgrep -P "$1" -x sleep | tr '\n' ' ' | sed 's/ $//'; }
	wait_for 30 test -n "$(sleepers "$main")" || { fail jobs "no singleton under forkd $main"; return; }
	single=$(sleepers "$main")
	[ "$(count "$single")" -eq 1 ] || { fail jobs "singletons [$single], want one"; return; }
	ticked() { [ "$(journalctl -q FORKD_SCHEDULE=tick -o cat | grep -c '^tick ')" -ge 3 ]; }
	wait_for 30 ticked || { fail jobs "fewer than 3 runs of tick in the journal with FORKD_SCHEDULE=tick"; return; }
	journalctl -q FORKD_SCHEDULE=tick -o verbose -n 1 | grep -q 'FORKD_RUN_ID=' || { fail jobs "a run's journal entry has no FORKD_RUN_ID"; return; }
	grep -q '"tick"' /var/lib/forkd/jobs/schedules.json 2>>"$LOG" || { fail jobs "persistent = true: no last run of tick in /var/lib/forkd/jobs/schedules.json (StateDirectory=)"; return; }
	sctl reload "$svc" || { fail jobs "systemctl reload $svc failed"; return; }
	again=$(sleepers "$main")
	[ "$again" = "$single" ] || { fail jobs "the singleton changed across a reload: [$single] -> [$again]"; return; }
	sctl stop "$svc"
	runs=$(journalctl -q FORKD_SCHEDULE=tick -o cat | grep -c '^tick ')
	[ -z "$(alive "$single")" ] || { fail jobs "the singleton $single outlived the service"; return; }
	log "jobs: singleton $single kept across a reload; $runs runs of tick in the journal"
	pass jobs
}

# cg_start writes /etc/forkd/$1.toml — python3 workers of cgworker.py on
# 127.0.0.1:$2, a child_exit hook appending "PID REASON" to
# /run/forkd/$1/exits, and the [worker] keys in $3 — and starts
# forkd@$1.service without its socket unit (forkd binds the port itself).
cg_start() {
	cat >"/etc/forkd/$1.toml" <<-TOML
		[server]
		name = "$1"
		workers = 3
		bind = ["tcp://127.0.0.1:$2"]
		graceful_timeout = "10s"

		[worker]
		command = "/usr/bin/python3"
		args = ["/usr/lib/forkd-e2e/cgworker.py"]
		ready = "started"
		ready_delay = "300ms"
		$3

		[[hooks.child_exit]]
		exec = ["/bin/sh", "-c", "echo \"\$FORKD_PID \$FORKD_REASON\" >> /run/forkd/$1/exits"]
	TOML
	sctl mask "forkd@$1.socket" >>"$LOG" 2>&1
	sctl start "forkd@$1.service"
}

# cg_ready succeeds once instance $1 has 3 ready workers.
cg_ready() { [ "$(forkctl workers "$1" 2>/dev/null | grep -c ' ready ')" -ge 3 ]; }

# cg_logged counts the lines of forkd@$1.service's journal that hold $2.
cg_logged() { journalctl -q -u "forkd@$1.service" -o cat | grep -c -- "$2"; }

check_cgroup() {
	# Under systemd with Delegate= on cgroup v2: forkd in its unit's leaf
	# master, each worker in a cgroup of its own; per-worker memory in
	# forkctl workers; a worker past max_memory recycled, reason "memory"
	# (log and child_exit hook), with no failed request under a request
	# stream.
	local name=cgroup url=http://127.0.0.1:18083 main unit w dir out fails mem before stream
	if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
		skip $name "the container has no cgroup v2 hierarchy (the host runs cgroup v1 or a hybrid)"
		return
	fi
	cg_start cg 18083 'max_memory = "80M"' || { fail $name "systemctl start forkd@cg.service failed"; return; }
	wait_for 30 cg_ready cg || { fail $name "3 workers not ready: $(forkctl workers cg 2>&1)"; return; }
	main=$(systemctl show -p MainPID --value forkd@cg.service)
	unit=$(systemctl show -p ControlGroup --value forkd@cg.service)
	[ "$(sed -n 's/^0:://p' /proc/"$main"/cgroup)" = "$unit/master" ] || { fail $name "forkd runs in $(sed -n 's/^0:://p' /proc/"$main"/cgroup), want $unit/master"; return; }
	for w in $(pgrep -P "$main" python3); do
		dir=$(sed -n 's/^0:://p' /proc/"$w"/cgroup)
		case $dir in "$unit"/worker-*) ;; *) fail $name "worker $w runs in $dir, want $unit/worker-…"; return ;; esac
	done
	mem=$(forkctl workers cg | awk 'NR > 1 && $(NF-1) != "-"' | wc -l)
	[ "$mem" -ge 3 ] || { fail $name "forkctl workers shows the memory of $mem workers, want 3: $(forkctl workers cg 2>&1)"; return; }

	before=$(cg_logged cg 'reason=memory')
	out=/tmp/cg-stream
	# One curl, 300 requests one after another, each on a connection of its
	# own (the worker speaks HTTP/1.0); each status code, 000 for none, to $out.
	curl -s --max-time 10 -w '%{stderr}%{http_code}\n' "$url/?n=[1-300]" >/dev/null 2>"$out" &
	stream=$!
	curl -fsS --max-time 20 "$url/grow?mb=100" >>"$LOG" 2>&1 || { fail $name "growing a worker by 100M failed"; wait $stream; return; }
	recycled() { [ "$(cg_logged cg 'reason=memory')" -gt "$before" ]; }
	wait_for 20 recycled || { fail $name "no worker recycled with reason=memory after passing max_memory"; wait $stream; return; }
	wait_for 10 grep -q ' memory$' /run/forkd/cg/exits || { fail $name "the child_exit hook did not get FORKD_REASON=memory: $(cat /run/forkd/cg/exits 2>&1)"; wait $stream; return; }
	wait $stream
	fails=$(grep -vc '^200$' "$out")
	[ "$(grep -c . "$out")" -eq 300 ] || { fail $name "the request stream made $(grep -c . "$out") requests, want 300: $(tail -3 "$out")"; return; }
	[ "$fails" -eq 0 ] || { fail $name "$fails of 300 requests failed while a worker was recycled for max_memory: $(grep -v '^200$' "$out" | sort | uniq -c | tr '\n' ' ')"; return; }
	log "cgroup: $(forkctl workers cg 2>&1 | tr '\n' ';')"
	sctl stop forkd@cg.service
	pass $name
}

check_cgroup_limits() {
	# The limits of the workers' cgroups: memory_max and pids_max in their
	# files; a worker past memory_max OOM-killed and reported "oom" (log
	# and child_exit hook); a fork bomb stopped at pids_max while the
	# workers serve.
	local name=cgroup-limits url=http://127.0.0.1:18084 main w dir out n
	if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] ||
		! grep -qw memory /sys/fs/cgroup/cgroup.controllers || ! grep -qw pids /sys/fs/cgroup/cgroup.controllers; then
		skip $name "the container's cgroup v2 has no memory and pids controllers (the host runs cgroup v1 or a hybrid)"
		return
	fi
	cg_start cgl 18084 'memory_max = "160M"
pids_max = 32
cpu_weight = 200' || { fail $name "systemctl start forkd@cgl.service failed"; return; }
	wait_for 30 cg_ready cgl || { fail $name "3 workers not ready: $(forkctl workers cgl 2>&1)"; return; }
	main=$(systemctl show -p MainPID --value forkd@cgl.service)
	for w in $(pgrep -P "$main" python3); do
		dir=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/"$w"/cgroup)
		[ "$(cat "$dir/pids.max")" = 32 ] || { fail $name "$dir/pids.max is $(cat "$dir/pids.max"), want 32"; return; }
		[ "$(cat "$dir/memory.max")" = $((160 << 20)) ] || { fail $name "$dir/memory.max is $(cat "$dir/memory.max")"; return; }
		[ "$(cat "$dir/cpu.weight")" = 200 ] || { fail $name "$dir/cpu.weight is $(cat "$dir/cpu.weight"), want 200"; return; }
	done

	# Past memory_max: the OOM killer, reported as such.
	curl -s --max-time 20 "$url/grow?mb=400" >>"$LOG" 2>&1
	oomed() { [ "$(cg_logged cgl 'reason=oom')" -gt 0 ]; }
	wait_for 20 oomed || { fail $name "no worker exit with reason=oom in the journal after growing past memory_max"; return; }
	wait_for 10 grep -q ' oom$' /run/forkd/cgl/exits || { fail $name "the child_exit hook did not get FORKD_REASON=oom: $(cat /run/forkd/cgl/exits 2>&1)"; return; }
	wait_for 30 cg_ready cgl || { fail $name "the OOM-killed worker was not replaced"; return; }

	# A fork bomb stops at pids_max; the workers still serve.
	out=$(curl -fsS --max-time 30 "$url/bomb" 2>&1) || { fail $name "the fork bomb request failed: $out"; return; }
	n=${out#forked }
	[ "$n" -gt 0 ] 2>/dev/null && [ "$n" -lt 32 ] || { fail $name "the fork bomb made $n processes, want fewer than pids_max (32)"; return; }
	out=$(curl -s --max-time 10 -w '%{stderr}%{http_code}\n' "$url/?n=[1-30]" 2>&1 >/dev/null)
	[ "$(grep -c '^200$' <<<"$out")" -eq 30 ] || { fail $name "requests failed after the fork bomb: $(sort <<<"$out" | uniq -c | tr '\n' ' ')"; return; }
	log "cgroup-limits: bomb forked $n; $(forkctl workers cgl 2>&1 | tr '\n' ';')"
	sctl stop forkd@cgl.service
	pass $name
}

check_metrics() {
	# [metrics] bind under the shipped unit's hardening: forkd-metrics runs
	# as forkd's child and serves the pool's families and the master's
	# process_*; it goes with the service.
	local name=metrics svc=forkd@metrics.service main side body
	{
		sed -e 's/^name = .*/name = "metrics"/' -e 's|127.0.0.1:18080|127.0.0.1:18085|' "$CONFIG"
		printf '\n[metrics]\nbind = "tcp://127.0.0.1:19150"\n'
	} >/etc/forkd/metrics.toml
	sctl mask forkd@metrics.socket >>"$LOG" 2>&1
	sctl start "$svc" || { fail $name "systemctl start $svc failed"; return; }
	main=$(systemctl show -p MainPID --value "$svc")
	side=$(pgrep -P "$main" -x forkd-metrics)
	[ -n "$side" ] || { fail $name "no forkd-metrics under forkd $main"; return; }
	body=$(curl -fsS --max-time 10 http://127.0.0.1:19150/metrics 2>&1) || { fail $name "scrape failed: $body"; return; }
	grep -q '^forkd_workers{' <<<"$body" || { fail $name "no forkd_workers in the scrape: $(head -c 300 <<<"$body")"; return; }
	grep -q '^process_start_time_seconds ' <<<"$body" || { fail $name "no process_start_time_seconds (the master's /proc) in the scrape"; return; }
	sctl stop "$svc"
	[ -z "$(alive "$side")" ] || { fail $name "forkd-metrics $side outlived the service"; return; }
	pass $name
}

check_go_tests() {
	# The Go tests that need a cgroup v2 with controllers (gotests.sh), in
	# a unit with Delegate=yes as forkd's is.
	local name=go-tests out rc
	if ! [ -f /usr/lib/forkd-e2e/gotests.list ]; then
		skip $name "no Go test binaries were installed"
		return
	fi
	out=$(timeout 300 systemd-run --wait --pipe --collect --quiet -p Delegate=yes /usr/lib/forkd-e2e/gotests.sh 2>&1)
	rc=$?
	printf '%s\n' "$out" >>"$LOG"
	[ $rc -eq 0 ] || { fail $name "$(grep -E '^gotests:|--- FAIL|^panic' <<<"$out" | head -5 | tr '\n' ';')"; return; }
	pass $name
}

check_stop() {
	local main old body left
	main=$(mainpid)
	old=$(workers "$main")
	sctl stop "$SERVICE" || { fail stop "systemctl stop failed"; return; }
	left=$(alive "$main $old")
	[ -z "$left" ] || { fail stop "still running after stop: [$left]"; return; }
	[ "$(systemctl is-active "$SERVICE")" = inactive ] || { fail stop "service is $(systemctl is-active "$SERVICE") after stop"; return; }
	[ "$(systemctl is-active "$SOCKET")" = active ] || { fail stop "socket unit is $(systemctl is-active "$SOCKET") after stopping the service"; return; }
	ss -ltn 'sport = :18080' | grep -q 18080 || { fail stop "nothing listens on 127.0.0.1:18080"; return; }
	body=$(get) || { fail stop "next request not answered: $body"; return; }
	wait_for 30 is_active "$SERVICE" || { fail stop "service is $(systemctl is-active "$SERVICE") after the next request, want active"; return; }
	pass stop
}

# CHECKS, when the runner unit sets it, names the checks to run (their
# functions without check_), in order; by default all of them.
for c in ${CHECKS:-activation status reload reload_invalid kill upgrade fdstore jobs metrics cgroup cgroup_limits stop}; do
	"check_$c"
done
log "done"
