#!/bin/sh
# forkd preremove: Debian prerm and RPM %preun.
#
#   Debian: prerm remove (real removal) | upgrade NEW-VERSION | deconfigure … | failed-upgrade …
#   RPM:    %preun 0 (real removal) | 1 (upgrade)
#
# On a real removal, stops every forkd instance, sockets first in the same
# transaction so that no connection starts a service whose binary is about
# to go. On an upgrade running instances keep serving.
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl stop 'forkd@*.socket' 'forkd@*.service' || true
fi

exit 0
