package jobs

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestEvery_Next(t *testing.T) {
	anchor := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	e := Every{Period: 5 * time.Minute, Anchor: anchor}
	for _, tt := range []struct {
		after, want time.Time
	}{
		{anchor, anchor.Add(5 * time.Minute)}, // strictly after: the anchor itself is not next
		{anchor.Add(time.Nanosecond), anchor.Add(5 * time.Minute)},
		{anchor.Add(4*time.Minute + 59*time.Second), anchor.Add(5 * time.Minute)},
		{anchor.Add(5 * time.Minute), anchor.Add(10 * time.Minute)},
		{anchor.Add(-time.Nanosecond), anchor},
		{anchor.Add(-5 * time.Minute), anchor},
		{anchor.Add(-7 * time.Minute), anchor.Add(-5 * time.Minute)},
		{anchor.Add(24*time.Hour + 2*time.Minute), anchor.Add(24*time.Hour + 5*time.Minute)},
	} {
		if got := e.Next(tt.after); !got.Equal(tt.want) {
			t.Errorf("Next(%v) = %v, want %v", tt.after, got, tt.want)
		}
	}
}

// TestEvery_noDrift: the next due time comes from the grid, not from when
// a run ended, however long runs take.
func TestEvery_noDrift(t *testing.T) {
	anchor := time.Date(2025, 6, 1, 12, 0, 0, 123, time.UTC)
	e := Every{Period: time.Minute, Anchor: anchor}
	due := anchor
	for i := 1; i <= 1000; i++ {
		// A run starts late and takes 0–90 s; the supervisor asks for the
		// next due time after the later of its due time and its end.
		end := due.Add(time.Duration(rand.Int64N(int64(90 * time.Second))))
		next := e.Next(due)
		if want := anchor.Add(time.Duration(i) * time.Minute); !next.Equal(want) {
			t.Fatalf("run %d: next = %v, want %v", i, next, want)
		}
		if end.After(next) {
			// Overlapping: the due time after the end is still on the grid.
			if n := e.Next(end); n.Sub(anchor)%time.Minute != 0 {
				t.Fatalf("Next(%v) = %v is off the grid", end, n)
			}
		}
		due = next
	}
}

func TestEvery_zeroAnchor(t *testing.T) {
	e := Every{Period: 5 * time.Minute}
	seoul := time.FixedZone("KST", 9*3600)
	after := time.Date(2025, 6, 1, 12, 3, 10, 0, seoul)
	want := time.Date(2025, 6, 1, 12, 5, 0, 0, seoul)
	if got := e.Next(after); !got.Equal(want) {
		t.Errorf("Next(%v) = %v, want %v (aligned to the epoch)", after, got, want)
	}
	if got := e.Last(after); !got.Equal(want.Add(-5 * time.Minute)) {
		t.Errorf("Last(%v) = %v, want %v", after, got, want.Add(-5*time.Minute))
	}
}

func TestEvery_noPeriod(t *testing.T) {
	now := time.Now()
	for _, p := range []time.Duration{0, -time.Second} {
		e := Every{Period: p, Anchor: now}
		if got := e.Next(now); !got.IsZero() {
			t.Errorf("period %v: Next = %v, want zero", p, got)
		}
		if got := e.Last(now); !got.IsZero() {
			t.Errorf("period %v: Last = %v, want zero", p, got)
		}
	}
}

// TestEvery_lastAndNext: Last(t) ≤ t < Next(t), one period apart, or t on
// the grid itself.
func TestEvery_lastAndNext(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	anchor := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for range 10000 {
		p := time.Duration(1 + r.Int64N(int64(48*time.Hour)))
		e := Every{Period: p, Anchor: anchor}
		tm := anchor.Add(time.Duration(r.Int64N(int64(2*365*24*time.Hour))) - 365*24*time.Hour)
		last, next := e.Last(tm), e.Next(tm)
		if last.After(tm) || !next.After(tm) || next.Sub(last) != p {
			t.Fatalf("period %v at %v: Last %v, Next %v", p, tm, last, next)
		}
		if last.Sub(anchor)%p != 0 {
			t.Fatalf("period %v at %v: Last %v is off the grid", p, tm, last)
		}
		if got := e.Last(last); !got.Equal(last) {
			t.Fatalf("Last(%v) = %v, want itself", last, got)
		}
	}
}

// TestEvery_handOver: any due time is an anchor of the same grid, so
// handing over the next due time hands over the schedule.
func TestEvery_handOver(t *testing.T) {
	start := time.Date(2025, 6, 1, 12, 0, 0, 7, time.UTC)
	old := Every{Period: 90 * time.Second, Anchor: start}
	now := start.Add(17 * time.Minute)
	handed := Every{Period: 90 * time.Second, Anchor: old.Next(now)}
	for tm := now; tm.Before(now.Add(time.Hour)); tm = tm.Add(7 * time.Second) {
		if a, b := old.Next(tm), handed.Next(tm); !a.Equal(b) {
			t.Fatalf("Next(%v): %v before the hand-over, %v after", tm, a, b)
		}
	}
}

func TestSpread(t *testing.T) {
	a, b := Spread("cleanup", time.Minute), Spread("report", time.Minute)
	if a != Spread("cleanup", time.Minute) {
		t.Error("Spread gave one name two anchors")
	}
	if a == b {
		t.Errorf("two names on the same grid: %v", a)
	}
	for _, name := range []string{"a", "cleanup", "report", "x-1"} {
		off := Spread(name, time.Second).Sub(epoch)
		if off < 0 || off >= time.Second || off%time.Millisecond != 0 {
			t.Errorf("Spread(%q, 1s) is %v after the epoch, want whole ms in [0, 1s)", name, off)
		}
	}
	// 64 names over 1s: spread, not all at one instant.
	seen := map[time.Time]bool{}
	for i := range 64 {
		seen[Spread("job"+string(rune('a'+i%26))+string(rune('a'+i/26)), time.Second)] = true
	}
	if len(seen) < 50 {
		t.Errorf("64 names fell on %d instants of a second", len(seen))
	}
}
