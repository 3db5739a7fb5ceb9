// Command boot-ab times the master's boot of several forkd binaries side by
// side: it starts each in turn, N rounds, with the config CONFIG, and reads
// from the kernel's proc connector (package bench's WatchProcs; root) how
// long each took from its exec to its first child's fork. Interleaving the
// binaries round by round puts a busy or a quiet spell of the machine on
// every side alike.
//
//	go build -o /tmp/boot-ab ./bench/cmd/boot-ab
//	/tmp/boot-ab -n 120 -config bench.toml /tmp/forkd-before /tmp/forkd-after
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"github.com/forkd/forkd/bench"
)

func main() {
	n := flag.Int("n", 60, "rounds: starts of each binary")
	config := flag.String("config", "", "the forkd config every binary starts with (required)")
	flag.Parse()
	if *config == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: boot-ab [-n ROUNDS] -config FILE FORKD…")
		os.Exit(2)
	}
	if err := run(*n, *config, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "boot-ab:", err)
		os.Exit(1)
	}
}

// run starts each binary n times, in turn, and prints the median and
// quartiles of its exec → first fork.
func run(n int, config string, bins []string) error {
	w, err := bench.WatchProcs()
	if err != nil {
		return err
	}
	defer w.Close()
	boots := make([][]float64, len(bins))
	for range n {
		for i, bin := range bins {
			d, err := boot(w, bin, config)
			if err != nil {
				return fmt.Errorf("%s: %w", bin, err)
			}
			boots[i] = append(boots[i], d)
		}
	}
	for i, bin := range bins {
		v := boots[i]
		slices.Sort(v)
		fmt.Printf("%s: exec → first fork median %.3f ms, p25 %.3f, p75 %.3f, n %d\n", bin, v[len(v)/2], v[len(v)/4],
			v[3*len(v)/4], len(v))
	}
	return nil
}

// boot starts bin once and returns its exec → first fork in ms; it kills
// bin's process group after.
func boot(w *bench.ProcWatch, bin, config string) (float64, error) {
	w.Drain()
	cmd := exec.Command(bin, "--config", config, "--bus", "none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	pid := cmd.Process.Pid
	defer func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	forked := func(e bench.ProcEvent) bool { return e.Kind == bench.ProcFork && e.Parent == pid }
	evs, err := w.Wait(10*time.Second, "its first fork", func(es []bench.ProcEvent) bool {
		return slices.ContainsFunc(es, forked)
	})
	if err != nil {
		return 0, err
	}
	var execd, fork time.Duration
	for _, e := range evs {
		switch {
		case e.Kind == bench.ProcExec && e.PID == pid && execd == 0:
			execd = e.At
		case forked(e) && fork == 0:
			fork = e.At
		}
	}
	if execd == 0 || fork == 0 {
		return 0, fmt.Errorf("no exec or fork of pid %d among the events", pid)
	}
	return float64(fork-execd) / float64(time.Millisecond), nil
}
