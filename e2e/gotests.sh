#!/bin/bash
# gotests.sh — runs, inside e2e's virtual machine, the Go tests that need a
# cgroup v2 with controllers: inside.sh starts it as a unit of its own with
# Delegate=yes. Its processes move to the leaf runner, the unit's cgroup
# passes memory, pids and cpu on to tests/, where testkit.Cgroup makes the
# tests' cgroups ($FORKD_TEST_CGROUP). gotests.list has one "BINARY TEST"
# per line, BINARY a test binary beside this script. Every test must pass:
# a failure, a skip or a test that did not run makes it exit 1.

set -u
here=$(dirname "$0")
cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
mkdir "$cg/runner" "$cg/tests" || exit 1
echo $$ >"$cg/runner/cgroup.procs" || exit 1
echo "+memory +pids +cpu" >"$cg/cgroup.subtree_control" || exit 1
echo "+memory +pids +cpu" >"$cg/tests/cgroup.subtree_control" || exit 1
export FORKD_TEST_CGROUP=$cg/tests

rc=0
for bin in $(cut -d' ' -f1 "$here/gotests.list" | sort -u); do
	tests=$(awk -v b="$bin" '$1 == b { print $2 }' "$here/gotests.list")
	out=$(cd /tmp && "$here/$bin" -test.v -test.count=1 -test.run "^($(echo $tests | tr ' ' '|'))\$" 2>&1)
	echo "$out"
	for t in $tests; do
		grep -q -- "^--- PASS: $t " <<<"$out" || { echo "gotests: $bin $t did not pass"; rc=1; }
	done
	if grep -q -- '--- SKIP' <<<"$out"; then
		echo "gotests: $bin skipped: $(grep -A1 -- '--- SKIP' <<<"$out" | tr '\n' ' ')"
		rc=1
	fi
done
exit $rc
