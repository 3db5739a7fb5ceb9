package jobs

import (
	"hash/fnv"
	"time"
)

// Timing says when a schedule's runs are due. Due times come from the
// schedule alone, never from when a run started or ended, so runs do not
// drift however long they take.
type Timing interface {
	// Next returns the first due time strictly after after, or the zero
	// Time if there is none.
	Next(after time.Time) time.Time
	// Last returns the latest due time at or before t, or the zero Time if
	// there is none (for a cron expression: none in the five years before
	// t).
	Last(t time.Time) time.Time
}

// Every is the timing of `every = "5m"`: due times one Period apart on a
// grid through Anchor, the instants Anchor + k·Period for every integer k.
//
// Anchor is any instant on the grid; the supervisor sets it to Spread's
// instant for the schedule's name, so that the grid is the same at every
// start, reload and upgrade, and schedules of the same period do not all
// fall due at once. The zero Anchor means the Unix epoch: periods that
// divide a day then fall on round UTC times.
type Every struct {
	// Period is the time between due times; Next and Last return the
	// zero Time unless it is more than 0.
	Period time.Duration
	// Anchor is one instant on the grid; zero means the Unix epoch.
	Anchor time.Time
}

// epoch is the zero Anchor's instant.
var epoch = time.Unix(0, 0)

// steps returns how many whole periods t is after the anchor (floor, so
// negative before it) and the anchor itself.
func (e Every) steps(t time.Time) (k int64, anchor time.Time) {
	anchor = e.Anchor
	if anchor.IsZero() {
		anchor = epoch.In(t.Location())
	}
	d := t.Sub(anchor)
	k = int64(d / e.Period)
	if d%e.Period < 0 {
		k--
	}
	return k, anchor
}

// Next returns the first instant Anchor + k·Period strictly after after.
func (e Every) Next(after time.Time) time.Time {
	if e.Period <= 0 {
		return time.Time{}
	}
	k, anchor := e.steps(after)
	return anchor.Add(time.Duration(k+1) * e.Period)
}

// Last returns the latest instant Anchor + k·Period at or before t.
func (e Every) Last(t time.Time) time.Time {
	if e.Period <= 0 {
		return time.Time{}
	}
	k, anchor := e.steps(t)
	return anchor.Add(time.Duration(k) * e.Period)
}

// String returns e as `every = "…"` would write it, with the anchor.
func (e Every) String() string {
	if e.Anchor.IsZero() {
		return "every " + e.Period.String()
	}
	return "every " + e.Period.String() + " from " + e.Anchor.Format(time.RFC3339Nano)
}

// Spread returns the anchor of the interval schedule called name: the Unix
// epoch plus an offset below period, in whole milliseconds, that depends
// on the name alone (FNV-1a), as systemd's FixedRandomDelay= does. Every
// forkd and every start of one gives a name the same grid.
func Spread(name string, period time.Duration) time.Time {
	steps := int64(period / time.Millisecond)
	if steps <= 0 {
		return epoch
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return epoch.Add(time.Duration(h.Sum64()%uint64(steps)) * time.Millisecond)
}
