//go:build linux

package e2e

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// vmChecks are the names inside.sh reports in the virtual machine: the
// checks that need a kernel whose cgroup v2 has the memory and pids
// controllers.
var vmChecks = []string{"boot", "cgroup", "cgroup-limits", "go-tests"}

// vmGoTests are the Go tests, by package, that skip on a host whose cgroup
// v2 lacks controllers; the virtual machine runs them (gotests.sh).
var vmGoTests = map[string][]string{
	"cgroup":  {"TestTree_NewAndRemove", "TestTree_Limits", "TestTree_Setup", "TestWatcher_Crossing"},
	"workers": {"TestPool_CgroupPerWorker", "TestPool_RecycleMaxMemory", "TestPool_OOMReason", "TestPool_ListWorkers_Usage"},
}

// vmTimeout bounds the virtual machine's whole life: boot under emulation,
// the checks, poweroff.
const vmTimeout = 8 * time.Minute

// vmTarget is the unit the virtual machine boots into: the basic system,
// the bus and the checks, without the services this machine's own root
// enables for multi-user.target, which only slow an emulated boot.
const vmTarget = `[Unit]
Description=forkd end-to-end checks in a virtual machine
Requires=basic.target dbus.service forkd-e2e.service
After=basic.target dbus.service
AllowIsolate=yes
`

// vmModules are the kernel modules the initramfs loads, with what they
// depend on, to mount the root over virtio 9p.
var vmModules = []string{"virtio_pci", "9pnet_virtio", "9p"}

// TestVM boots the root TestSystemd boots — this machine's own systemd on
// an overlay of /, forkd installed — in a virtual machine of its own
// (qemu, Debian's kernel, the root shared over virtio 9p) and runs the
// checks of inside.sh that a container cannot run on a host whose cgroup
// v2 lacks the memory and pids controllers: per-worker cgroups with
// max_memory recycling on memory.current, a worker past memory_max
// OOM-killed and reported "oom", a fork bomb stopped at pids_max — and
// the Go tests of vmGoTests, which skip on such a host (gotests.sh). There
// every check must run: a skip fails.
//
// Needs root, qemu-system-x86_64, a static busybox and a Debian kernel
// with its modules in /boot and /lib/modules (make deps installs
// qemu-system-x86, busybox-static and linux-image-amd64).
func TestVM(t *testing.T) {
	qemu, kernel, modules, busybox := needVM(t)
	repo, work, root := installedRoot(t)
	installGoTests(t, repo, root, filepath.Join(work, "bin"))
	writeFile(t, root, "/etc/systemd/system/forkd-e2e.service.d/checks.conf",
		"[Service]\nEnvironment=\"CHECKS=cgroup cgroup_limits go_tests\"\nTimeoutStartSec=420\n", 0o644)
	writeFile(t, root, "/etc/systemd/system/forkd-e2e.target", vmTarget, 0o644)
	writeFile(t, root, "/etc/fstab", "tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0\n", 0o644)
	// The root is this machine's: if that is a container's, its marker
	// would make the machine's systemd believe it runs in one, and ignore
	// the kernel's command line.
	for _, marker := range []string{"/.dockerenv", "/run/.containerenv"} {
		if err := os.Remove(filepath.Join(root, marker)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	initrd := initramfs(t, work, modules, busybox)
	bootAndCheck(t, virtualMachine(qemu, kernel, initrd, root), work, filepath.Join(root, "results"), "inside.sh", vmChecks, 80, true)
}

// installGoTests builds the test binaries of vmGoTests' packages into dir
// and installs them beside gotests.sh, with gotests.list naming the tests
// to run.
func installGoTests(t *testing.T, repo, root, dir string) {
	t.Helper()
	var list strings.Builder
	pkgs := make([]string, 0, len(vmGoTests))
	for pkg := range vmGoTests {
		pkgs = append(pkgs, pkg)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, pkg+".test")
		cmd := exec.Command("go", "test", "-c", "-o", bin, "./"+pkg)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go test -c ./%s: %v\n%s", pkg, err, b)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, root, "/usr/lib/forkd-e2e/"+pkg+".test", string(b), 0o755)
		for _, test := range vmGoTests[pkg] {
			fmt.Fprintf(&list, "%s.test %s\n", pkg, test)
		}
	}
	script, err := os.ReadFile(filepath.Join(repo, "e2e", "gotests.sh"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, root, "/usr/lib/forkd-e2e/gotests.sh", string(script), 0o755)
	writeFile(t, root, "/usr/lib/forkd-e2e/gotests.list", list.String(), 0o644)
}

// needVM skips t unless this machine can boot a virtual machine of the
// root, and returns qemu's path, the kernel, the folder of its modules and
// a static busybox.
func needVM(t *testing.T) (qemu, kernel, modules, busybox string) {
	t.Helper()
	needContainer(t, "/usr/bin/python3")
	if runtime.GOARCH != "amd64" {
		t.Skipf("the virtual machine is x86_64; this is %s", runtime.GOARCH)
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
	}
	busybox, err = exec.LookPath("busybox")
	if err != nil || !static(busybox) {
		t.Skip("no static busybox for the initramfs (apt-get install busybox-static)")
	}
	// Debian points /vmlinuz at the newest kernel installed; any other with
	// its modules will do.
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if newest, err := filepath.EvalSymlinks("/vmlinuz"); err == nil {
		kernels = append([]string{newest}, kernels...)
	}
	for _, k := range kernels {
		version := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		dir := filepath.Join("/lib/modules", version)
		if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err == nil {
			return qemu, k, dir, busybox
		}
	}
	t.Skip("no kernel in /boot with its modules in /lib/modules (apt-get install linux-image-amd64)")
	return
}

// static reports whether the ELF file at path has no program interpreter.
func static(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// moduleOrder returns the files, relative to dir, of the modules names and
// all they depend on by dir's modules.dep, each after its dependencies.
func moduleOrder(dir string, names []string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{} // module file → the files it needs
	byName := map[string]string{} // module name → its file
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, needs, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[file] = strings.Fields(needs)
		name := strings.TrimSuffix(filepath.Base(file), ".ko")
		byName[strings.ReplaceAll(name, "-", "_")] = file
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		// modules.dep lists the deepest dependencies last.
		needs := deps[file]
		for i := len(needs) - 1; i >= 0; i-- {
			visit(needs[i])
		}
		order = append(order, file)
	}
	for _, n := range names {
		file, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("%s/modules.dep has no module %s (built into the kernel, or compressed?)", dir, n)
		}
		visit(file)
	}
	return order, nil
}

// initramfs writes the virtual machine's initramfs into work and returns
// its path: busybox and an init that loads the 9p modules, mounts the
// root shared as "root" and hands over to its systemd.
func initramfs(t *testing.T, work, modules, busybox string) string {
	t.Helper()
	order, err := moduleOrder(modules, vmModules)
	if err != nil {
		t.Skipf("the kernel's modules: %v", err)
	}
	dir := filepath.Join(work, "initramfs")
	for _, d := range []string{"bin", "modules", "root", "dev", "proc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyTo := func(src, dst string, mode os.FileMode) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("initramfs: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	copyTo(busybox, "bin/busybox", 0o755)
	var init strings.Builder
	init.WriteString("#!/bin/busybox sh\n# Loads the 9p modules, mounts the shared root and starts its systemd.\n")
	for _, m := range order {
		copyTo(filepath.Join(modules, m), "modules/"+filepath.Base(m), 0o644)
		fmt.Fprintf(&init, "/bin/busybox insmod /modules/%s || echo \"initramfs: insmod %s failed\"\n", filepath.Base(m), filepath.Base(m))
	}
	init.WriteString("/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,access=client root /root ||\n" +
		"\t{ echo 'initramfs: cannot mount the root'; /bin/busybox poweroff -f; }\n" +
		"exec /bin/busybox switch_root /root /lib/systemd/systemd\n")
	if err := os.WriteFile(filepath.Join(dir, "init"), []byte(init.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "initramfs.cpio")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+out)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initramfs: cpio: %v\n%s", err, b)
	}
	return out
}

// virtualMachine returns the machine that boots kernel with initrd under
// qemu's emulation, with root shared read-write over virtio 9p; the
// checks' results are then under root, in the folder results.
func virtualMachine(qemu, kernel, initrd, root string) machine {
	return func(t *testing.T, results, console string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), vmTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, qemu,
			"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048",
			"-display", "none", "-no-reboot", "-nic", "none",
			"-serial", "file:"+console,
			"-kernel", kernel, "-initrd", initrd,
			"-append", "console=ttyS0 panic=-1 quiet systemd.unified_cgroup_hierarchy=1 "+
				"systemd.unit=forkd-e2e.target systemd.mask=timers.target",
			"-fsdev", "local,id=root,path="+root+",security_model=passthrough,multidevs=remap",
			"-device", "virtio-9p-pci,fsdev=root,mount_tag=root",
		)
		out, err := os.Create(filepath.Join(filepath.Dir(console), "qemu.log"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start qemu: %w", err)
		}
		pid := cmd.Process.Pid
		err = cmd.Wait()
		if ctx.Err() != nil {
			return fmt.Errorf("qemu (pid %d) still running after %v, stopped it: %v", pid, vmTimeout, err)
		}
		if err != nil {
			b, _ := os.ReadFile(out.Name())
			return fmt.Errorf("qemu (pid %d): %w\n%s", pid, err, b)
		}
		return nil
	}
}
