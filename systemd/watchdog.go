package systemd

import (
	"context"
	"fmt"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
)

// WatchdogInterval returns the watchdog timeout systemd set for this
// process (WATCHDOG_USEC, when WATCHDOG_PID is unset or names this pid), or
// 0 when there is none or the Notifier is disabled. Watchdog pings every
// half of it.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() || n.watchdogErr != nil {
		return 0
	}
	return n.watchdog
}

// Watchdog keeps systemd's watchdog (WatchdogSec=) fed while, and only
// while, the caller is healthy. Every period — half of WATCHDOG_USEC,
// starting at once — it asks healthy, with a context that expires at the end
// of the period, and sends WATCHDOG=1 if healthy returned true before then.
// A healthy that returns false, or blocks past the period, costs that ping;
// a wedged arbiter therefore stops pinging and systemd restarts the service.
// While a call to healthy is still running no new one is made, so a healthy
// that ignores its context blocks pinging without piling up goroutines.
//
// Watchdog is a Run-style loop: it returns nil when ctx is cancelled, nil at
// once when no watchdog is configured for this process (or the Notifier is
// disabled), and an error when WATCHDOG_USEC is malformed or a ping cannot be
// sent.
func (n *Notifier) Watchdog(ctx context.Context, healthy func(ctx context.Context) bool) error {
	if !n.Enabled() {
		return nil
	}
	if n.watchdogErr != nil {
		return fmt.Errorf("systemd: watchdog: %w", n.watchdogErr)
	}
	if n.watchdog <= 0 {
		return nil
	}
	period := n.watchdog / 2
	if period <= 0 {
		period = n.watchdog
	}

	tick := time.NewTicker(period)
	defer tick.Stop()

	// answer receives the result of the call to healthy under way, if any;
	// deadline is when that call's answer stops counting.
	var (
		answer   chan bool
		deadline time.Time
	)
	check := func() {
		if answer != nil {
			return // the previous call has not returned yet
		}
		deadline = time.Now().Add(period)
		hctx, cancel := context.WithDeadline(ctx, deadline)
		answer = make(chan bool, 1)
		go func(ch chan<- bool) {
			defer cancel()
			ch <- healthy(hctx)
		}(answer)
	}

	check()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ok := <-answer:
			answer = nil
			if ok && time.Now().Before(deadline) && ctx.Err() == nil {
				if err := n.Notify(sddaemon.SdNotifyWatchdog); err != nil {
					return fmt.Errorf("systemd: watchdog ping: %w", err)
				}
			}
		case <-tick.C:
			check()
		}
	}
}
