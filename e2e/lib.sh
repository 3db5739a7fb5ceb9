# lib.sh — what inside.sh and install.sh share, sourced by both once they
# have set SERVICE, SOCKET and DEMO. Each check appends one line to
# $RESULTS (/results/results.txt):
#
#   PASS name
#   FAIL name: what went wrong
#   SKIP name: what this machine lacks for it
#
# and details go to $LOG (/results/log.txt).

RESULTS=/results/results.txt
LOG=/results/log.txt

: >"$RESULTS"
: >"$LOG"

log() { printf '%s %s\n' "$(date +%T.%3N)" "$*" >>"$LOG"; }
pass() { echo "PASS $1" >>"$RESULTS"; log "PASS $1"; }
skip() { echo "SKIP $1: $2" >>"$RESULTS"; log "SKIP $1: $2"; }
fail() {
	echo "FAIL $1: $2" >>"$RESULTS"
	log "FAIL $1: $2"
	systemctl status --no-pager --lines=30 "$SERVICE" "$SOCKET" >>"$LOG" 2>&1
}

mainpid() { systemctl show -p MainPID --value "$SERVICE"; }

# workers prints the pids, sorted, of the $DEMO processes whose parent is
# $1 (forkd execs each worker's command in the process it forked, so the
# workers are the master's direct children).
workers() {
	local parent=$1 pid ppid rest
	for stat in /proc/[0-9]*/stat; do
		pid=${stat#/proc/}
		pid=${pid%/stat}
		read -r _ _ _ ppid rest <"$stat" 2>/dev/null || continue
		[ "$ppid" = "$parent" ] || continue
		[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$DEMO" ] && echo "$pid"
	done | sort -n | tr '\n' ' ' | sed 's/ $//'
}

count() { set -- $1; echo $#; }

# wait_for runs the command "$2…" every 0.1 s until it succeeds or $1
# seconds have passed (polling: these are states of systemd's, dpkg's and
# other processes' work, which only they and /proc can tell about here).
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -ge "$deadline" ] && return 1
		sleep 0.1
	done
}
