package systemd

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// maxFDsPerMessage is the kernel's SCM_MAX_FD: how many descriptors one
// SCM_RIGHTS message may carry.
const maxFDsPerMessage = 253

// StoreFDs hands duplicates of files to systemd's file descriptor store
// under name (FDSTORE=1, FDNAME=name, the descriptors as SCM_RIGHTS).
// systemd keeps them while the service restarts and passes them back
// through LISTEN_FDS/LISTEN_FDNAMES; the unit needs FileDescriptorStoreMax=.
// forkd stores the sockets it bound itself, so a restart drops no
// connection. The files stay open and usable by the caller; their blocking
// mode is not touched.
//
// name must be 1–255 printable ASCII bytes without ':' (ErrFDName); files
// must not be empty (ErrNoFiles) and may hold at most 253 descriptors.
// StoreFDs returns nil without sending when the Notifier is disabled.
func (n *Notifier) StoreFDs(name string, files ...*os.File) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	if len(files) == 0 {
		return ErrNoFiles
	}
	if len(files) > maxFDsPerMessage {
		return fmt.Errorf("systemd: store fds %q: %d files, at most %d per message", name, len(files), maxFDsPerMessage)
	}
	if !n.Enabled() {
		return nil
	}
	state := []byte("FDSTORE=1\nFDNAME=" + name)
	err := withFDs(files, nil, func(fds []int) error {
		return n.send(state, unix.UnixRights(fds...))
	})
	if err != nil {
		return fmt.Errorf("systemd: store fds %q: %w", name, err)
	}
	return nil
}

// RemoveFDs asks systemd to close and forget every descriptor stored under
// name (FDSTOREREMOVE=1, FDNAME=name), for a socket forkd no longer binds.
// It returns nil without sending when the Notifier is disabled.
func (n *Notifier) RemoveFDs(name string) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	return n.Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// withFDs calls fn with the descriptor numbers of files, each held valid
// (through its RawConn's Control) until fn returns. Unlike File.Fd it leaves
// the files' blocking mode alone.
func withFDs(files []*os.File, fds []int, fn func(fds []int) error) error {
	if len(files) == 0 {
		return fn(fds)
	}
	f := files[0]
	if f == nil {
		return fmt.Errorf("file %d is nil", len(fds))
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("file %d (%s): %w", len(fds), f.Name(), err)
	}
	var fnErr error
	if err := rc.Control(func(fd uintptr) {
		fnErr = withFDs(files[1:], append(fds, int(fd)), fn)
	}); err != nil {
		return fmt.Errorf("file %d (%s): %w", len(fds), f.Name(), err)
	}
	return fnErr
}

// checkFDName reports (as ErrFDName, wrapped with the name) whether name is
// not one systemd accepts in FDNAME=.
func checkFDName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("%w: %q must be 1 to 255 bytes", ErrFDName, name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == ':' {
			return fmt.Errorf("%w: %q: byte %d (%q) is a control character, ':' or not ASCII", ErrFDName, name, i, c)
		}
	}
	return nil
}
