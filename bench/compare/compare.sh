#!/usr/bin/env bash
# Runs make bench's benchmarks on two commits of forkd side by side, in one
# run, alternating the order each round, and prints every forkd figure of
# both with their ratio.
#
#   bench/compare/compare.sh BASE [ROUNDS] [BENCH-REGEXP]
#
# BASE is a commit (say, the last one before a refactor); the other side is
# the working tree this script lives in. Each round runs the benchmarks in a
# temporary worktree of BASE and here; docs/BENCHMARKS.md is restored after.
set -euo pipefail
base=${1:?usage: compare.sh BASE [ROUNDS] [BENCH-REGEXP]}
rounds=${2:-1}
pattern=${3:-.}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="/usr/local/go/bin:$PATH"
tmp=$(mktemp -d /tmp/forkd-compare.XXXXXX)
cleanup() {
	git -C "$here" worktree remove --force "$tmp/base" >/dev/null 2>&1 || true
	git -C "$here" checkout -- docs/BENCHMARKS.md 2>/dev/null || true
}
trap cleanup EXIT
git -C "$here" worktree add -q --detach "$tmp/base" "$base"
run() { # run TREE OUT
	echo "+ (cd $1 && go test -run '^\$' -bench '$pattern' -benchtime 1x ./bench/)" >&2
	(cd "$1" && go test -run '^$' -bench "$pattern" -benchtime 1x -timeout 60m ./bench/) >"$2" 2>&1 ||
		{ echo "benchmarks failed in $1: see $2" >&2; return 1; }
}
for r in $(seq 1 "$rounds"); do
	if ((r % 2)); then
		run "$tmp/base" "$tmp/base.$r.txt"; run "$here" "$tmp/new.$r.txt"
	else
		run "$here" "$tmp/new.$r.txt"; run "$tmp/base" "$tmp/base.$r.txt"
	fi
done
/usr/bin/python3 "$here/bench/compare/join.py" "$base" "$tmp"/base.*.txt -- "$tmp"/new.*.txt
echo "outputs kept in $tmp" >&2
