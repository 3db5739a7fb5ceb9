// Command boot-ab times the master's boot of several forkd binaries side by
// side: it starts each in turn, N rounds, with the config CONFIG, and reads
// from the kernel's proc connector (package bench's WatchProcs; root) how
// long each took from its exec to its first child's fork. Interleaving the
// binaries round by round puts a busy or a quiet spell of the machine on
// every side alike.
//
// With -ready it also gives each master a NOTIFY_SOCKET of its own and
// times exec → the master's READY=1 (its workers must send READY=1: give
// the config ready = "notify" workers, as bench scenario 1 does).
//
//	go build -o /tmp/boot-ab ./bench/cmd/boot-ab
//	/tmp/boot-ab -n 120 -config bench.toml /tmp/forkd-before /tmp/forkd-after
//	/tmp/boot-ab -n 120 -ready -config bench.toml /tmp/forkd-before /tmp/forkd-after
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/forkd/forkd/bench"
)

func main() {
	n := flag.Int("n", 60, "rounds: starts of each binary")
	config := flag.String("config", "", "the forkd config every binary starts with (required)")
	ready := flag.Bool("ready", false, "also time exec → READY=1 on a NOTIFY_SOCKET of boot-ab's")
	flag.Parse()
	if *config == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: boot-ab [-n ROUNDS] [-ready] -config FILE FORKD…")
		os.Exit(2)
	}
	if err := run(*n, *config, *ready, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "boot-ab:", err)
		os.Exit(1)
	}
}

// run starts each binary n times, in turn, and prints the median and
// quartiles of its exec → first fork, and with ready of its exec → READY=1.
func run(n int, config string, ready bool, bins []string) error {
	w, err := bench.WatchProcs()
	if err != nil {
		return err
	}
	defer w.Close()
	var ns *net.UnixConn
	if ready {
		dir, err := os.MkdirTemp("", "boot-ab-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		ns, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
		if err != nil {
			return err
		}
		defer ns.Close()
	}
	forks := make([][]float64, len(bins))
	readies := make([][]float64, len(bins))
	for range n {
		for i, bin := range bins {
			fork, toReady, err := boot(w, ns, bin, config)
			if err != nil {
				return fmt.Errorf("%s: %w", bin, err)
			}
			forks[i] = append(forks[i], fork)
			readies[i] = append(readies[i], toReady)
		}
	}
	for i, bin := range bins {
		fmt.Printf("%s: exec → first fork %s\n", bin, quartiles(forks[i]))
		if ready {
			fmt.Printf("%s: exec → READY=1 %s\n", bin, quartiles(readies[i]))
		}
	}
	return nil
}

// quartiles formats the median and quartiles of v (sorting v).
func quartiles(v []float64) string {
	slices.Sort(v)
	return fmt.Sprintf("median %.3f ms, p25 %.3f, p75 %.3f, n %d", v[len(v)/2], v[len(v)/4], v[3*len(v)/4], len(v))
}

// boot starts bin once and returns its exec → first fork in ms and, when
// ns is not nil (its NOTIFY_SOCKET), its exec → READY=1; it kills bin's
// process group after.
func boot(w *bench.ProcWatch, ns *net.UnixConn, bin, config string) (fork, toReady float64, err error) {
	w.Drain()
	cmd := exec.Command(bin, "--config", config, "--bus", "none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if ns != nil {
		if err := drain(ns); err != nil {
			return 0, 0, err
		}
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.LocalAddr().String())
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	pid := cmd.Process.Pid
	defer func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	var readyAt time.Duration
	if ns != nil {
		if readyAt, err = awaitReady(ns); err != nil {
			return 0, 0, err
		}
	}
	forked := func(e bench.ProcEvent) bool { return e.Kind == bench.ProcFork && e.Parent == pid }
	evs, err := w.Wait(10*time.Second, "its first fork", func(es []bench.ProcEvent) bool {
		return slices.ContainsFunc(es, forked)
	})
	if err != nil {
		return 0, 0, err
	}
	var execd, forkAt time.Duration
	for _, e := range evs {
		switch {
		case e.Kind == bench.ProcExec && e.PID == pid && execd == 0:
			execd = e.At
		case forked(e) && forkAt == 0:
			forkAt = e.At
		}
	}
	if execd == 0 || forkAt == 0 {
		return 0, 0, fmt.Errorf("no exec or fork of pid %d among the events", pid)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(forkAt - execd), ms(readyAt - execd), nil
}

// drain discards the datagrams waiting on ns.
func drain(ns *net.UnixConn) error {
	buf := make([]byte, 4096)
	for {
		if err := ns.SetReadDeadline(time.Now()); err != nil {
			return err
		}
		if _, err := ns.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
	}
}

// awaitReady reads ns until a message with READY=1 arrives, and returns
// when it was read (CLOCK_MONOTONIC, the proc connector's clock).
func awaitReady(ns *net.UnixConn) (time.Duration, error) {
	if err := ns.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, err
	}
	buf := make([]byte, 4096)
	for {
		n, err := ns.Read(buf)
		if err != nil {
			return 0, fmt.Errorf("wait for READY=1: %w", err)
		}
		if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
			return bench.Monotonic(), nil
		}
	}
}
