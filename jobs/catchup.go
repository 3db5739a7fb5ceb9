package jobs

import "time"

// Missed reports whether a persistent schedule owes one run at start, as
// systemd timers with Persistent=true do: whether t had a due time after
// last (the ScheduledAt of the last run, from the State) and at or before
// now. due is the latest such time, the one the catch-up run is for
// (however many were missed, one run catches up). A schedule that never ran
// (last is zero) owes nothing.
func Missed(t Timing, last, now time.Time) (due time.Time, ok bool) {
	if last.IsZero() {
		return time.Time{}, false
	}
	next := t.Next(last)
	if next.IsZero() || next.After(now) {
		return time.Time{}, false
	}
	due = t.Last(now)
	if due.Before(next) {
		// Last and Next disagree only if t is inconsistent; the missed
		// time Next found is owed either way.
		due = next
	}
	return due, true
}
