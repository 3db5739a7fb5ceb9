#!/bin/sh
# changelog.sh VERSION RELEASE PACKAGER: writes the packages' changelog, in
# the chglog YAML that nfpm reads (nfpm.yaml's changelog:), to stdout. nfpm
# turns it into /usr/share/doc/forkd/changelog.Debian.gz and the rpm's
# %changelog.
#
# One entry per release tag vX.Y.Z, newest first, dated by the tagged
# commit, listing the subjects of the commits since the previous tag; and,
# when VERSION is not a tag's, a first entry for VERSION dated by HEAD with
# the commits since the last tag. Run from the repository; the output
# depends only on the history, so a package built twice is the same.
#
#   packaging/changelog.sh 1.2.3 1 'forkd developers <forkd@users.noreply.github.com>'
set -eu

version=$1
release=$2
packager=$3
# At most this many commits are listed per release; the rest are counted.
max=40

# quote prints $1 as a YAML single-quoted scalar.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }

# short prints a commit subject cut to at most 72 characters at a word.
short() {
	printf '%s\n' "$1" | awk '{
		if (length($0) <= 72) { print; exit }
		s = substr($0, 1, 69); sub(/ [^ ]*$/, "", s); print s "..."
	}'
}

# entry VERSION REV RANGE: one release, dated by REV, listing the commits of
# the git range RANGE (no merges).
entry() {
	v=$1 rev=$2 range=$3
	date=$(git log -1 --format=%cI "$rev")
	echo "- semver: $(quote "$v-$release")"
	echo "  date: $date"
	echo "  packager: $(quote "$packager")"
	echo "  deb:"
	echo "    urgency: medium"
	echo "    distributions: [unstable]"
	echo "  changes:"
	n=$(git rev-list --count --no-merges $range)
	if [ "$n" -eq 0 ]; then
		echo "    - note: $(quote "Release $v.")"
		return
	fi
	git log --no-merges --format='%H %s' -n "$max" $range | while read -r hash subject; do
		echo "    - commit: $hash"
		echo "      note: $(quote "$(short "$subject")")"
	done
	if [ "$n" -gt "$max" ]; then
		echo "    - note: $(quote "... and $((n - max)) earlier changes (git log ${range}).")"
	fi
}

# Release tags, newest version first.
tags=$(git tag --list 'v[0-9]*' --sort=-version:refname)
latest=$(printf '%s\n' "$tags" | head -n1)

if [ -z "$latest" ]; then
	entry "$version" HEAD HEAD
	exit 0
fi
if [ "v$version" != "$latest" ]; then
	entry "$version" HEAD "$latest..HEAD"
fi
prev=""
for tag in $(printf '%s\n' "$tags" | sort -V); do
	if [ -z "$prev" ]; then
		range=$tag
	else
		range=$prev..$tag
	fi
	prev=$tag
	printf '%s\t%s\n' "$tag" "$range"
done | sort -r -V | while IFS="$(printf '\t')" read -r tag range; do
	entry "${tag#v}" "$tag" "$range"
done
