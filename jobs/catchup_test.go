package jobs

import (
	"testing"
	"time"
)

func TestMissed(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	daily := mustCron(t, "0 3 * * *", berlin)
	at := func(day, hour, minute int) time.Time { return time.Date(2025, 6, day, hour, minute, 0, 0, berlin) }
	anchor := at(1, 0, 0)
	every := Every{Period: time.Hour, Anchor: anchor}
	for _, tt := range []struct {
		name      string
		timing    Timing
		last, now time.Time
		want      time.Time // zero: nothing owed
	}{
		{"never ran", daily, time.Time{}, at(10, 12, 0), time.Time{}},
		{"ran today", daily, at(10, 3, 0), at(10, 12, 0), time.Time{}},
		{"down over one due time", daily, at(9, 3, 0), at(10, 12, 0), at(10, 3, 0)},
		{"down for days: one run, for the latest", daily, at(2, 3, 0), at(10, 12, 0), at(10, 3, 0)},
		{"back exactly at the due time", daily, at(9, 3, 0), at(10, 3, 0), at(10, 3, 0)},
		{"back just before it", daily, at(9, 3, 0), at(10, 2, 59), time.Time{}},
		{"every: not yet", every, at(1, 5, 0), at(1, 5, 59), time.Time{}},
		{"every: missed", every, at(1, 5, 0), at(1, 8, 30), at(1, 8, 0)},
		{"last run off the grid", every, at(1, 5, 20), at(1, 6, 10), at(1, 6, 0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			due, ok := Missed(tt.timing, tt.last, tt.now)
			if ok != !tt.want.IsZero() || !due.Equal(tt.want) {
				t.Errorf("Missed(%v, last %v, now %v) = %v, %v; want %v", tt.timing, tt.last, tt.now, due, ok, tt.want)
			}
		})
	}
}
