#!/bin/sh
# forkd postinstall: Debian postinst and RPM %post.
#
#   Debian: postinst configure [OLD-VERSION] | abort-upgrade | abort-remove | abort-deconfigure …
#   RPM:    %post 1 (install) | 2 (upgrade)
#
# Creates the forkd system user (sysusers.d), makes a running systemd see
# the new or changed forkd@ units, and makes the D-Bus system bus load the
# forkd policy. Running instances are left alone: restart them (or reload
# them for a new worker command) when it suits you.
set -e

case "$1" in
configure | abort-upgrade | abort-remove | abort-deconfigure | [0-9]*) ;;
*) exit 0 ;;
esac

systemd-sysusers /usr/lib/sysusers.d/forkd.conf

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	# dbus-daemon (and dbus-broker) re-read their policy files on reload.
	if systemctl is-active --quiet dbus.service; then
		systemctl reload dbus.service || true
	fi
fi

exit 0
