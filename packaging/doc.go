// Package packaging builds forkd's .deb and .rpm. It holds no Go code a
// program calls: it is the nfpm config, the maintainer scripts, the man
// pages and the sample config, and the tests that build real packages from
// them and check what they install.
//
//	packaging/nfpm.yaml               what goes where (nfpm, https://nfpm.goreleaser.com)
//	packaging/scripts/*.sh            postinstall, preremove, postremove (deb and rpm)
//	packaging/man/*.[158]             forkctl(1), forkd.toml(5), forkd(8), plain roff
//	packaging/example.toml.sample     /etc/forkd/example.toml.sample
//	packaging/changelog.sh            the changelog, from the git tags (chglog YAML for nfpm)
//	packaging/deb/copyright           /usr/share/doc/forkd/copyright (machine-readable)
//	packaging/deb/lintian-overrides   /usr/share/lintian/overrides/forkd, each with its reason
//	packaging/rpmlint.toml            rpmlint's filters for the rpm, each with its reason
//
// Built from the repository root:
//
//	make deb        # dist/forkd_VERSION-1_ARCH.deb
//	make rpm        # dist/forkd-VERSION-1.ARCH.rpm
//	make deb rpm ARCH=arm64
//
// with stripped binaries (-s -w) for ARCH in dist/bin. The packages carry
// the license (Apache-2.0: the .deb's copyright file, the rpm's License:
// and /usr/share/licenses/forkd/LICENSE) and a changelog written from the
// release tags (changelog.Debian.gz, the rpm's %changelog). lintian and
// rpmlint find no error in them (TestPackages_Lint); run them as an
// unprivileged user (see rpmlint.toml).
//
// The packages install /usr/bin/forkd and /usr/bin/forkctl; the units
// forkd@.socket and forkd@.service in /usr/lib/systemd/system; the forkd
// system user in /usr/lib/sysusers.d/forkd.conf; the D-Bus policy and
// interface in /usr/share/dbus-1; man pages; an empty /etc/forkd with
// example.toml.sample, a conffile that is not an instance. The demo worker
// goes to /usr/lib/forkd/forkd-demo: it is an example the sample config
// runs, not a command, so it stays out of PATH; so does
// /usr/lib/forkd/forkd-cluster, the etcd sidecar forkd starts for jobs with
// scope = "cluster", and /usr/lib/forkd/forkd-metrics, the Prometheus
// sidecar forkd starts for a [metrics] bind. The Type=notify-reload unit
// for systemd 253 and later is documentation
// (/usr/share/doc/forkd/examples/notify-reload/), since the active unit has
// to work on Debian 12's systemd 252.
//
// The maintainer scripts follow both conventions for $1: postinstall
// (Debian "configure", RPM 1 or 2) creates the user with systemd-sysusers
// and, when systemd runs, reloads its units and the D-Bus policy;
// preremove stops every forkd@ socket and service only on a real removal
// (Debian "remove", RPM 0), never on an upgrade; postremove makes systemd
// forget the units after a removal, and a Debian purge also removes the
// links that enable or mask forkd@ instances (deb-systemd-helper purge and
// unmask semantics) and /var/lib/forkd. Running instances are never restarted
// by an upgrade.
//
// The tests need nfpm (installed with `go install` when missing), dpkg-deb,
// git, and rpm, groff, lintian, rpmlint and cpio where present; they skip,
// saying which is missing, otherwise.
package packaging
