package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is where the cgroup v2 hierarchy is mounted.
const Mount = "/sys/fs/cgroup"

// MasterLeaf is the name of the leaf cgroup forkd moves itself into, under
// the delegated root.
const MasterLeaf = "master"

// controlLeaf is where systemd (with Delegate=yes) runs a unit's control
// processes, ExecStartPre= among them: under the delegated root too.
const controlLeaf = ".control"

// Controllers are the controllers Setup enables for the children, those
// the root has among them.
var Controllers = []string{"cpu", "memory", "pids"}

// ErrNoDelegation is wrapped by Open's error when this process may not
// manage a cgroup v2 subtree of its own.
var ErrNoDelegation = errors.New("cgroup: no delegated cgroup v2 subtree")

// Tree is the delegated subtree: a cgroup v2 directory this process may
// create children in.
type Tree struct {
	// Root is the delegated root's directory, under Mount.
	Root string
	// available are the controllers the root may enable (its
	// cgroup.controllers).
	available []string
}

// Open finds the subtree delegated to this process: its own cgroup v2, or
// the parent of it when it is the master's leaf (after Setup, an upgrade,
// or as a control process of the unit). The error wraps ErrNoDelegation
// and says what is missing: a cgroup v2 hierarchy at Mount, write access
// to the process's cgroup (systemd's Delegate= gives it), systemd's mark
// of a delegated cgroup (for root, who may write any), or a cgroup of its
// own: one that holds other processes (a login session's, a test
// runner's) is not taken over.
func Open() (*Tree, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(Mount, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoDelegation, Mount, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%w: %s is not a cgroup v2 hierarchy (this system uses cgroup v1 or a hybrid; boot with systemd.unified_cgroup_hierarchy=1)", ErrNoDelegation, Mount)
	}
	self, err := Of(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDelegation, err)
	}
	root := self
	if b := filepath.Base(self); b == MasterLeaf || b == controlLeaf {
		root = filepath.Dir(self)
	}
	if root == "/" {
		return nil, fmt.Errorf("%w: this process runs in the root cgroup (run forkd as a systemd service with Delegate=yes)", ErrNoDelegation)
	}
	dir := filepath.Join(Mount, root)
	for _, f := range []string{"cgroup.procs", "cgroup.subtree_control"} {
		err := unix.Access(filepath.Join(dir, f), unix.W_OK)
		switch {
		case errors.Is(err, unix.EROFS):
			return nil, fmt.Errorf("%w: cannot write %s: %w (ProtectControlGroups= makes /sys/fs/cgroup read-only: give the unit ReadWritePaths= for its own cgroup, as forkd@.service does)",
				ErrNoDelegation, filepath.Join(dir, f), err)
		case err != nil:
			return nil, fmt.Errorf("%w: cannot write %s: %w (run forkd as a systemd service with Delegate=yes, as forkd@.service does)",
				ErrNoDelegation, filepath.Join(dir, f), err)
		}
	}
	if err := unix.Access(dir, unix.W_OK); err != nil {
		return nil, fmt.Errorf("%w: cannot create cgroups in %s: %w (run forkd as a systemd service with Delegate=yes)", ErrNoDelegation, dir, err)
	}
	if os.Geteuid() == 0 && !delegated(dir) {
		// root may write any cgroup: only systemd's mark says this one is
		// forkd's to rearrange.
		return nil, fmt.Errorf("%w: %s is not delegated (systemd marks a cgroup it delegates with the user.delegate attribute: give the unit Delegate=, as forkd@.service has)",
			ErrNoDelegation, dir)
	}
	if err := alone(dir); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDelegation, err)
	}
	return &Tree{Root: dir, available: strings.Fields(string(b))}, nil
}

// delegated reports whether systemd marked the cgroup at dir as delegated
// (the extended attribute user.delegate or trusted.delegate set to "1",
// which systemd ≥ 251 writes for units with Delegate=).
func delegated(dir string) bool {
	for _, attr := range []string{"user.delegate", "trusted.delegate"} {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}

// alone checks that no process but this one is in the cgroup at dir: one
// systemd delegated to a service holds its main process only, while a
// cgroup shared with others (a login session's, a test runner's) is not
// forkd's to rearrange.
func alone(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoDelegation, err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, pid := range strings.Fields(string(b)) {
		if pid != self {
			return fmt.Errorf("%w: %s holds other processes than forkd (pid %s among them): it is not a cgroup delegated to forkd (run forkd as a systemd service with Delegate=yes)",
				ErrNoDelegation, dir, pid)
		}
	}
	return nil
}

// TreeAt returns the cgroup v2 directory dir as a Tree, for a caller that
// owns it already (a test's own cgroup): unlike Open it checks only that
// dir is a cgroup, and Setup would move this process into it.
func TreeAt(dir string) (*Tree, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %s: %w", dir, err)
	}
	return &Tree{Root: dir, available: strings.Fields(string(b))}, nil
}

// Of returns the cgroup v2 path of process pid, relative to Mount ("/"
// for the root), from /proc/PID/cgroup.
func Of(pid int) (string, error) {
	name := "/proc/" + strconv.Itoa(pid) + "/cgroup"
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("read the cgroup of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: no cgroup v2 entry (0::)", name)
}

// Has reports whether the root can hand controller c down to its
// children.
func (t *Tree) Has(c string) bool { return slices.Contains(t.available, c) }

// Setup moves this process (all its threads) into the root's MasterLeaf,
// unless it is in it already, and enables Controllers for the root's
// children: every cgroup New makes then gets them.
func (t *Tree) Setup() error {
	leaf := filepath.Join(t.Root, MasterLeaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroup: create %s: %w", leaf, err)
	}
	self, err := Of(os.Getpid())
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	if filepath.Join(Mount, self) != leaf {
		if err := write(leaf, "cgroup.procs", strconv.Itoa(os.Getpid())); err != nil {
			return fmt.Errorf("cgroup: move forkd into %s: %w", leaf, err)
		}
	}
	return t.Enable()
}

// Enable enables Controllers (those the root has) for the root's
// children; the root must hold no process itself (Setup moves this one
// out of it first).
func (t *Tree) Enable() error {
	var enable []string
	for _, c := range Controllers {
		if t.Has(c) {
			enable = append(enable, "+"+c)
		}
	}
	if len(enable) == 0 {
		return nil
	}
	if err := write(t.Root, "cgroup.subtree_control", strings.Join(enable, " ")); err != nil {
		return fmt.Errorf("cgroup: enable %s in %s: %w", strings.Join(enable, " "), t.Root, err)
	}
	return nil
}

// Missing returns the limits of l that the root cannot apply, as their
// config keys ("memory_max", …): their controller is not delegated.
func (t *Tree) Missing(l Limits) []string {
	var keys []string
	for _, s := range l.settings() {
		if !t.Has(s.controller) {
			keys = append(keys, s.key)
		}
	}
	return keys
}

// write writes value into the cgroup file dir/name.
func write(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
