package jobs

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	cron "github.com/netresearch/go-cron"
)

// cronParser returns the parser, made on first use rather than at every
// start of forkd (and of its exec-shim). It reads the five standard fields
// (minute, hour, day of month, month, day of week) and the descriptors
// @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly.
// When both the day of month and the day of week are restricted, a day
// matching either one matches, as in Vixie and ISC cron.
var cronParser = sync.OnceValue(func() cron.Parser {
	return cron.MustNewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor | cron.DowOrDom)
})

// allHours is the hour field's bits when it matches every hour.
const allHours = 1<<24 - 1

// Cron is the timing of `cron = "…"` in a time zone, parsed by ParseCron.
// Its due times are those of cron(8) on a machine in that zone, daylight
// saving time included:
//
//   - A time that a spring-forward change skips is due as many minutes
//     after the change as it was meant to be after the hour (02:30 on a
//     night that goes from 02:00 to 03:00 is due at 03:30), so that no
//     day's run is lost.
//   - A time that a fall-back change repeats is due once, the first time,
//     unless the hour field is "*" (or @hourly): such a schedule runs in
//     each real hour, both times through the repeated one, as ISC cron
//     does.
//
// A Cron is immutable and safe for concurrent use.
type Cron struct {
	expr      string
	loc       *time.Location
	spec      *cron.SpecSchedule
	everyHour bool
}

// ParseCron parses a standard five-field cron expression ("*/5 * * * *",
// "30 3 * * MON-FRI") or a descriptor ("@daily"), whose times are read in
// loc (time.Local if nil).
//
// It returns an error saying what is wrong for an expression cron(8) would
// not take, for one that carries its own time zone ("TZ=…" or "CRON_TZ=…":
// the zone is loc), for "@every …" (an interval, not a calendar time), and
// for one that matches no date in the next five years (February 30).
func ParseCron(expr string, loc *time.Location) (*Cron, error) {
	if loc == nil {
		loc = time.Local
	}
	trimmed := strings.TrimSpace(expr)
	switch {
	case trimmed == "":
		return nil, errors.New("empty cron expression (five fields, e.g. \"*/5 * * * *\")")
	case strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ="):
		return nil, fmt.Errorf("cron expression %q sets its own time zone: set timezone instead", expr)
	case strings.HasPrefix(trimmed, "@every"):
		return nil, fmt.Errorf("cron expression %q is an interval: write every = %q instead", expr, strings.TrimSpace(strings.TrimPrefix(trimmed, "@every")))
	}
	sched, err := cronParser().Parse(trimmed)
	if err != nil {
		return nil, fmt.Errorf("invalid cron expression %q: %v", expr, err)
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("cron expression %q is not a time of day (five fields, or @hourly, @daily, @weekly, @monthly, @yearly)", expr)
	}
	// Times are converted to loc before the library sees them (see Next);
	// with its Location at time.Local it reads them in their own zone.
	spec.Location = time.Local
	c := &Cron{expr: expr, loc: loc, spec: spec, everyHour: spec.Hour&allHours == allHours}
	if c.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("cron expression %q matches no date in the next five years", expr)
	}
	return c, nil
}

// String returns the expression as written.
func (c *Cron) String() string { return c.expr }

// Location returns the time zone the expression is read in.
func (c *Cron) Location() *time.Location { return c.loc }

// Next returns the first due time strictly after after, in c's zone, or
// the zero Time if there is none in the next five years.
func (c *Cron) Next(after time.Time) time.Time {
	t := after.In(c.loc)
	// The repeated hour holds at most 60 minutes of due times to pass over.
	for range 120 {
		n := c.spec.Next(t)
		if n.IsZero() || c.everyHour || !repeated(n) {
			return n
		}
		t = n
	}
	return time.Time{}
}

// Last returns the latest due time at or before t, in c's zone, or the zero
// Time if there is none in the five years before t.
func (c *Cron) Last(t time.Time) time.Time {
	t = t.In(c.loc)
	// The library's Prev finds a due time at or before t, but without
	// Next's daylight saving rules: walk forward with Next from a little
	// before it, which finds the same times Next does.
	const margin = 3 * time.Hour
	before := t.Add(time.Second) // Prev returns times strictly before
	for range 4 {
		p := c.spec.Prev(before)
		if p.IsZero() {
			return time.Time{}
		}
		var last time.Time
		for n := c.Next(p.Add(-margin)); !n.IsZero() && !n.After(t); n = c.Next(n) {
			last = n
		}
		if !last.IsZero() {
			return last
		}
		before = p.Add(-margin)
	}
	return time.Time{}
}

// repeated reports whether t's wall-clock time in its zone also happened
// earlier, in an hour that a fall-back change repeats.
func repeated(t time.Time) bool {
	const window = 3 * time.Hour // longer than any change of offset
	_, off := t.Zone()
	if _, o := t.Add(-window).Zone(); o <= off {
		return false // no change to a smaller offset in the window
	}
	for d := 15 * time.Minute; d <= window; d += 15 * time.Minute {
		if _, o := t.Add(-d).Zone(); time.Duration(o-off)*time.Second == d {
			return true
		}
	}
	return false
}
