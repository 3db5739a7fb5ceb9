#!/bin/sh
# forkd postremove: Debian postrm and RPM %postun.
#
#   Debian: postrm remove | purge | upgrade NEW-VERSION | failed-upgrade … | abort-install … | disappear …
#   RPM:    %postun 0 (real removal) | 1 (upgrade)
#
# After a real removal, makes a running systemd forget the forkd@ units and
# the system bus drop the forkd policy. After an RPM upgrade, makes systemd
# forget unit files the new version no longer has (they are removed after
# the new version's %post ran). A Debian upgrade needs nothing here: the new
# version's postinst runs last. The forkd user, like every system user, and
# the configs in /etc/forkd that are not the package's stay.
set -e

case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
		if systemctl is-active --quiet dbus.service; then
			systemctl reload dbus.service || true
		fi
	fi
	;;
1)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
	;;
esac

exit 0
