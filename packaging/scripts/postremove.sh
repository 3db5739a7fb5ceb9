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
# version's postinst runs last.
#
# A Debian purge also forgets what the administrator did with forkd's
# units, as `deb-systemd-helper purge` and `unmask` do for a package's own
# units: the links that enable or mask forkd@NAME instances (systemctl
# enable, mask), and deb-systemd-helper's records of them, which would
# otherwise dangle once the template units are gone; and the instances'
# state, /var/lib/forkd (StateDirectory=), and the empty /run/forkd their
# sockets were in. The forkd user, like every
# system user, and the files in /etc/forkd that are not the package's
# (instance configs, drop-ins in /etc/systemd/system) stay. $DPKG_ROOT is
# the root dpkg works on (empty: /).
set -e

# forget_instances removes the enablement and mask links of forkd@ units
# under /etc/systemd/system, and deb-systemd-helper's state about them.
forget_instances() {
	etc="$DPKG_ROOT/etc/systemd/system"
	for link in "$etc"/forkd@*.socket "$etc"/forkd@*.service \
		"$etc"/*.wants/forkd@* "$etc"/*.requires/forkd@* "$etc"/*.upholds/forkd@*; do
		[ -L "$link" ] || continue
		dir=${link%/*}
		if [ "$dir" = "$etc" ]; then
			# A unit file of its own (systemctl link) is the
			# administrator's; only a mask is forgotten.
			[ "$(readlink "$link")" = /dev/null ] || continue
			rm -f "$link"
		else
			rm -f "$link"
			rmdir --ignore-fail-on-non-empty "$dir" 2>/dev/null || true
		fi
	done
	lib="$DPKG_ROOT/var/lib/systemd"
	for f in "$lib"/deb-systemd-helper-enabled/forkd@* "$lib"/deb-systemd-helper-enabled/*/forkd@* \
		"$lib"/deb-systemd-helper-masked/forkd@*; do
		if [ -e "$f" ] || [ -L "$f" ]; then
			rm -f "$f"
		fi
	done
}

if [ "$1" = purge ]; then
	forget_instances
	rm -rf "$DPKG_ROOT/var/lib/forkd"
	# The directory systemd made for the instances' sockets, empty once
	# they are stopped.
	rmdir "$DPKG_ROOT/run/forkd" 2>/dev/null || true
fi

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
