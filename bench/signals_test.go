package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/bench/benchworker"
	"github.com/forkd/forkd/bus"
)

// busFor starts a private dbus-daemon and a SignalLog on it, both closed
// when b ends; it skips b when dbus-daemon is not installed.
func busFor(b *testing.B) (*BusDaemon, *SignalLog) {
	b.Helper()
	d, err := StartBusDaemon()
	if errors.Is(err, ErrNoBusDaemon) {
		report.Note("%s skipped: dbus-daemon is not installed (apt-get install dbus-daemon).", b.Name())
		b.Skip(err)
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := d.Close(); err != nil {
			b.Errorf("dbus-daemon: %v", err)
		}
	})
	log, err := WatchSignals(d.Address)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { log.Close() })
	return d, log
}

// signalsNamed returns the signals among sigs called name.
func signalsNamed(sigs []Signal, name string) []Signal {
	var out []Signal
	for _, s := range sigs {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// BenchmarkBusLatency is scenario 10 (forkd only): hook → D-Bus signal
// latency of ChildExit (from the SIGKILL) and PostWorkerInit (from the
// worker's ready probe), over 200 kills of 24 workers.
func BenchmarkBusLatency(b *testing.B) {
	s := env(b)
	daemon, log := busFor(b)
	const workers, kills = 24, 200
	const minAge = 1200 * time.Millisecond // past forkd's 1 s min uptime: no backoff
	spec := s.forkdSpec(workers, 30*time.Second)
	spec.Bus = daemon.Address
	m := s.start(b, false, spec)
	if _, err := m.WaitReady(workers, 30*time.Second); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	if _, err := log.Wait(10*time.Second, "WhenReady", func(sigs []Signal) bool {
		return len(signalsNamed(sigs, "WhenReady")) > 0 || m.Err() != nil
	}); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}

	killedAt := map[int]time.Time{}
	diedAt := map[int]time.Time{} // when the bench's own pidfd of the victim said it had exited
	slotOf := map[int]int32{}     // killed pid → worker id
	for k := range kills {
		victim, readyAt := 0, time.Time{}
		for pid, at := range ReadyPIDs(m.Probe.Events()) {
			if _, dead := killedAt[pid]; !dead && (victim == 0 || at.Before(readyAt)) {
				victim, readyAt = pid, at
			}
		}
		if victim == 0 {
			b.Fatalf("kill %d: no live worker", k+1)
		}
		<-time.After(time.Until(readyAt.Add(minAge))) // the precondition: past the min uptime
		pidfd, err := unix.PidfdOpen(victim, 0)
		if err != nil {
			b.Fatalf("pidfd_open worker %d: %v", victim, err)
		}
		at := time.Now()
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			b.Fatalf("kill worker %d: %v", victim, err)
		}
		killedAt[victim] = at
		died, err := waitPidfd(pidfd, 5*time.Second)
		unix.Close(pidfd)
		if err != nil {
			b.Fatalf("worker %d: %v", victim, err)
		}
		diedAt[victim] = died
		sigs, err := log.Wait(5*time.Second, fmt.Sprintf("ChildExit of pid %d", victim), func(sigs []Signal) bool {
			for _, sg := range signalsNamed(sigs, "ChildExit") {
				if pid, _ := sg.PID(); pid == victim {
					return true
				}
			}
			return m.Err() != nil
		})
		if err == nil {
			err = m.Err()
		}
		if err != nil {
			b.Fatalf("kill %d: %v\n%s", k+1, err, m.Output())
		}
		for _, sg := range signalsNamed(sigs, "ChildExit") {
			if pid, _ := sg.PID(); pid == victim {
				slotOf[victim], _ = sg.Body[2].(int32)
			}
		}
	}
	// Every replacement's PostWorkerInit.
	sigs, err := log.Wait(10*time.Second, fmt.Sprintf("%d PostWorkerInit", workers+kills), func(sigs []Signal) bool {
		return len(signalsNamed(sigs, "PostWorkerInit")) >= workers+kills || m.Err() != nil
	})
	if err == nil {
		err = m.Err()
	}
	if err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	readyAt := ReadyPIDs(m.Probe.Events())
	closeMaster(b, m)

	var exitLat, killLat, initLat, forkLat Sample
	forks := signalsNamed(sigs, "PostFork")
	for victim, at := range killedAt {
		// The first PostFork in the victim's slot after the kill is its
		// replacement's (kills in one slot are ≥ 1.2 s apart).
		for _, sg := range forks {
			if slot, _ := sg.Body[2].(int32); slot != slotOf[victim] || !sg.At.After(at) {
				continue
			}
			forkLat = append(forkLat, ms(sg.At.Sub(at)))
			pid, _ := sg.PID()
			for _, init := range signalsNamed(sigs, "PostWorkerInit") {
				if p, _ := init.PID(); p == pid {
					if ready, ok := readyAt[pid]; ok {
						initLat = append(initLat, ms(init.At.Sub(ready)))
					}
				}
			}
			break
		}
	}
	for _, sg := range signalsNamed(sigs, "ChildExit") {
		if pid, _ := sg.PID(); !killedAt[pid].IsZero() {
			killLat = append(killLat, ms(sg.At.Sub(killedAt[pid])))
			exitLat = append(exitLat, ms(sg.At.Sub(diedAt[pid])))
		}
	}
	if len(exitLat) != kills || len(initLat) != kills {
		b.Errorf("matched %d ChildExit and %d PostWorkerInit signals to the %d kills", len(exitLat), len(initLat), kills)
	}
	both := append(append(Sample(nil), exitLat...), initLat...)
	for _, q := range []struct {
		label string
		v     float64
	}{{"childexit-p50", exitLat.Median()}, {"childexit-p99", exitLat.Quantile(0.99)},
		{"kill-childexit-p99", killLat.Quantile(0.99)},
		{"postworkerinit-p50", initLat.Median()}, {"postworkerinit-p99", initLat.Quantile(0.99)},
		{"all-p99", both.Quantile(0.99)}} {
		b.ReportMetric(q.v, q.label+"-ms")
	}
	const sc = "10 hook → D-Bus signal, 24 workers (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	goal := Goal{Text: "≤ 5 ms", Limit: 5}
	report.Add(row(sc, fmt.Sprintf("ChildExit: worker exited (the bench's pidfd) → signal received, p50 of %d",
		len(exitLat)), "ms", Goal{}, one(exitLat.Median())))
	report.Add(row(sc, fmt.Sprintf("ChildExit: worker exited → signal received, p99 of %d", len(exitLat)), "ms", goal,
		one(exitLat.Quantile(0.99))))
	report.Add(row(sc, fmt.Sprintf("ChildExit: SIGKILL sent → signal received (adds the kernel's teardown), p50 of %d",
		len(killLat)), "ms", Goal{}, one(killLat.Median())))
	report.Add(row(sc, fmt.Sprintf("ChildExit: SIGKILL sent → signal received, p99 of %d", len(killLat)), "ms", Goal{},
		one(killLat.Quantile(0.99))))
	report.Add(row(sc, fmt.Sprintf("PostWorkerInit: worker's ready probe (before READY=1) → signal received, p50 of %d",
		len(initLat)), "ms", Goal{}, one(initLat.Median())))
	report.Add(row(sc, fmt.Sprintf("PostWorkerInit: worker's ready probe → signal received, p99 of %d", len(initLat)),
		"ms", goal, one(initLat.Quantile(0.99))))
	report.Add(row(sc, fmt.Sprintf("both, p99 of %d events", len(both)), "ms", goal, one(both.Quantile(0.99))))
	report.Add(row(sc, fmt.Sprintf("SIGKILL → the replacement's PostFork received, p50 of %d", len(forkLat)), "ms",
		Goal{}, one(forkLat.Median())))
	report.Add(row(sc, fmt.Sprintf("SIGKILL → the replacement's PostFork received, p99 of %d", len(forkLat)), "ms",
		Goal{}, one(forkLat.Quantile(0.99))))
}

// waitPidfd waits until the process behind pidfd has exited (the pidfd
// polls readable) and returns when the wait returned.
func waitPidfd(pidfd int, timeout time.Duration) (time.Time, error) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout/time.Millisecond))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return time.Time{}, fmt.Errorf("poll its pidfd: %w", err)
		case n == 0:
			return time.Time{}, fmt.Errorf("still alive %v after SIGKILL", timeout)
		}
		return time.Now(), nil
	}
}

// BenchmarkNotifyFlood is scenario 11 (forkd only): 64 workers flood
// forkd's NOTIFY_SOCKET at 12,800 datagrams/s for 5 s; the arbiter's
// responsiveness (ListWorkers over D-Bus, TTIN/TTOU → NworkersChanged) is
// compared with 5 s without the flood.
func BenchmarkNotifyFlood(b *testing.B) {
	s := env(b)
	daemon, log := busFor(b)
	const workers, perWorker = 64, 200
	const window = 5 * time.Second
	spec := withEnv(s.forkdSpec(workers, 30*time.Second), map[string]string{benchworker.EnvNotifyRate: fmt.Sprint(perWorker)})
	spec.Bus = daemon.Address
	m := s.start(b, false, spec)
	evs, err := m.WaitReady(workers, 60*time.Second)
	if err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	if _, err := log.Wait(10*time.Second, "WhenReady", func(sigs []Signal) bool {
		return len(signalsNamed(sigs, "WhenReady")) > 0 || m.Err() != nil
	}); err != nil {
		b.Fatalf("%v\n%s", err, m.Output())
	}
	flooders := ReadyPIDs(evs)
	toggle := func() {
		for pid := range flooders {
			if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
				b.Fatalf("toggle the flood of worker %d: %v", pid, err)
			}
		}
	}
	obj := log.Conn().Object(bus.Name("bench"), bus.ObjectPath)

	// probe measures for window: a ListWorkers round-trip every 40 ms and,
	// every 5th round, TTIN or TTOU → NworkersChanged.
	ttin := true
	probe := func() (rtt, scale Sample) {
		end := time.Now().Add(window)
		for i := 0; time.Now().Before(end); i++ {
			t := time.Now()
			var list []bus.WorkerEntry
			if err := obj.Call(bus.Interface+".ListWorkers", 0).Store(&list); err != nil {
				b.Fatalf("ListWorkers: %v", err)
			}
			rtt = append(rtt, ms(time.Since(t)))
			if len(list) < workers {
				b.Errorf("ListWorkers listed %d workers, want ≥ %d", len(list), workers)
			}
			if i%5 == 4 {
				sig := syscall.SIGTTIN
				if !ttin {
					sig = syscall.SIGTTOU
				}
				ttin = !ttin
				seen := len(signalsNamed(log.Signals(), "NworkersChanged"))
				t := time.Now()
				if err := syscall.Kill(m.PID(), sig); err != nil {
					b.Fatal(err)
				}
				sigs, err := log.Wait(5*time.Second, "NworkersChanged after "+sig.String(), func(sigs []Signal) bool {
					return len(signalsNamed(sigs, "NworkersChanged")) > seen || m.Err() != nil
				})
				if err == nil {
					err = m.Err()
				}
				if err != nil {
					b.Fatalf("%v\n%s", err, m.Output())
				}
				scale = append(scale, ms(signalsNamed(sigs, "NworkersChanged")[seen].At.Sub(t)))
			}
			<-time.After(40 * time.Millisecond) // the probing pace
		}
		return rtt, scale
	}

	cpu := func() time.Duration {
		d, err := CPUTime(m.PID())
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
	switches := func() uint64 {
		n, err := ContextSwitches(m.PID())
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	cpu0, t0 := cpu(), time.Now()
	idleRTT, idleScale := probe()
	cpu1, t1 := cpu(), time.Now()
	toggle()
	sw1, from := switches(), time.Now()
	floodRTT, floodScale := probe()
	to := time.Now()
	cpu2, sw2 := cpu(), switches()
	toggle()
	idleCPU := 100 * (cpu1 - cpu0).Seconds() / t1.Sub(t0).Seconds()
	floodCPU := 100 * (cpu2 - cpu1).Seconds() / to.Sub(t1).Seconds()
	var load string
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	if err := m.Err(); err != nil {
		b.Fatal(err)
	}
	// The flood's last reports, sent when it was toggled off.
	msgs, err := m.Probe.Wait(5*time.Second, "the flood's final counts", func(msgs []Message) bool {
		last := map[int]time.Time{}
		for _, s := range ParseSent(msgs) {
			last[s.PID] = s.At
		}
		for pid := range flooders {
			if !last[pid].After(to) {
				return false
			}
		}
		return true
	})
	if err != nil {
		b.Fatal(err)
	}
	rate := FloodRate(ParseSent(msgs), from, to.Add(time.Second))
	alive := len(liveWorkers(m))
	closeMaster(b, m)
	if alive < workers {
		b.Errorf("%d workers alive after the flood, want ≥ %d", alive, workers)
	}

	b.ReportMetric(rate, "notify-msgs/s")
	b.ReportMetric(floodRTT.Quantile(0.99), "flood-listworkers-p99-ms")
	b.ReportMetric(floodCPU, "flood-master-cpu-%")
	const sc = "11 notify flood, 64 workers (forkd only)"
	one := func(v float64) pair { return pair{v, math.NaN()} }
	report.Add(row(sc, fmt.Sprintf("WATCHDOG=1/STATUS= datagrams/s through forkd's NOTIFY_SOCKET (target %d)",
		workers*perWorker), "/s", Goal{Text: "≥ 10,000/s", Limit: 10000, AtLeast: true}, one(rate)))
	report.Add(row(sc, fmt.Sprintf("ListWorkers round-trip, no flood, p50 of %d", len(idleRTT)), "ms", Goal{},
		one(idleRTT.Median())))
	report.Add(row(sc, "ListWorkers round-trip, no flood, p99", "ms", Goal{}, one(idleRTT.Quantile(0.99))))
	report.Add(row(sc, fmt.Sprintf("ListWorkers round-trip, flood, p50 of %d", len(floodRTT)), "ms",
		Goal{Text: fmt.Sprintf("≤ no flood + 3 ms = %.2f ms", idleRTT.Median()+3), Limit: idleRTT.Median() + 3},
		one(floodRTT.Median())))
	report.Add(row(sc, "ListWorkers round-trip, flood, p99", "ms",
		Goal{Text: fmt.Sprintf("≤ no flood + 3 ms = %.2f ms", idleRTT.Quantile(0.99)+3),
			Limit: idleRTT.Quantile(0.99) + 3}, one(floodRTT.Quantile(0.99))))
	report.Add(row(sc, "forkd master CPU, no flood, % of one core", "%", Goal{}, one(idleCPU)))
	report.Add(row(sc, "forkd master CPU, flood, % of one core", "%", Goal{}, one(floodCPU)))
	report.Add(row(sc, "forkd master CPU per datagram, flood", "µs", Goal{},
		one((cpu2-cpu1).Seconds()*1e6/(rate*to.Sub(t1).Seconds()))))
	report.Add(row(sc, "forkd master context switches per datagram, flood", "", Goal{},
		one(float64(sw2-sw1)/(rate*to.Sub(from).Seconds()))))
	report.Note("Scenario 11 ran with a load average of %s on %d CPUs (/proc/loadavg after the flood).", load,
		runtime.NumCPU())
	report.Add(row(sc, fmt.Sprintf("TTIN/TTOU → NworkersChanged, no flood, max of %d", len(idleScale)), "ms", Goal{},
		one(idleScale.Max())))
	report.Add(row(sc, fmt.Sprintf("TTIN/TTOU → NworkersChanged, flood, max of %d", len(floodScale)), "ms",
		Goal{Text: fmt.Sprintf("≤ no flood + 3 ms = %.2f ms", idleScale.Max()+3), Limit: idleScale.Max() + 3},
		one(floodScale.Max())))
}
