package jobs

import (
	"encoding/hex"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRun_Env(t *testing.T) {
	seoul := mustZone(t, "Asia/Seoul")
	for _, tt := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2025, 6, 1, 3, 0, 0, 0, seoul), "2025-06-01T03:00:00+09:00"},
		{time.Date(2025, 6, 1, 3, 0, 0, 0, time.UTC), "2025-06-01T03:00:00Z"},
		{time.Date(2025, 6, 1, 3, 0, 0, 250_000_000, time.UTC), "2025-06-01T03:00:00.25Z"},
	} {
		r := Run{Schedule: "cleanup", ID: "0197-x", ScheduledAt: tt.at}
		want := []string{"FORKD_SCHEDULE=cleanup", "FORKD_RUN_ID=0197-x", "FORKD_SCHEDULED_AT=" + tt.want}
		if got := r.Env(); !slices.Equal(got, want) {
			t.Errorf("Env() = %q, want %q", got, want)
		}
		back, err := time.Parse(time.RFC3339, tt.want)
		if err != nil || !back.Equal(tt.at) {
			t.Errorf("%s reads back as %v, %v", tt.want, back, err)
		}
	}
	vars := Vars()
	for _, k := range []string{EnvSchedule, EnvRunID, EnvScheduledAt} {
		if vars[k] == "" {
			t.Errorf("Vars() lacks %s", k)
		}
	}
	if len(vars) != 3 {
		t.Errorf("Vars() = %v, want 3", vars)
	}
}

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestIDs(t *testing.T) {
	var g IDs
	now := time.Date(2025, 6, 1, 3, 0, 0, 0, time.UTC)
	id := g.New(now)
	if !uuidV7.MatchString(id) {
		t.Fatalf("New() = %q, not a UUIDv7", id)
	}
	// The first 48 bits are the Unix time in milliseconds.
	ms, err := hex.DecodeString(strings.ReplaceAll(id[:13], "-", ""))
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	for _, b := range ms {
		got = got<<8 | int64(b)
	}
	if got != now.UnixMilli() {
		t.Errorf("%s: time bits %d, want %d", id, got, now.UnixMilli())
	}

	// Same instant, later instants, and a clock stepping back: always
	// increasing, never equal.
	ids := []string{id}
	times := []time.Time{now, now, now.Add(100 * time.Nanosecond), now.Add(time.Microsecond), now.Add(time.Second), now.Add(-time.Hour), now.Add(time.Second)}
	for range 2000 {
		times = append(times, now.Add(time.Second))
	}
	for _, tm := range times {
		next := g.New(tm)
		if !uuidV7.MatchString(next) {
			t.Fatalf("New(%v) = %q, not a UUIDv7", tm, next)
		}
		if next <= ids[len(ids)-1] {
			t.Fatalf("New(%v) = %q, not after %q", tm, next, ids[len(ids)-1])
		}
		ids = append(ids, next)
	}

	// Generators in different processes sort by time.
	var a, b IDs
	early, late := a.New(now), b.New(now.Add(time.Millisecond))
	if early >= late {
		t.Errorf("an ID made 1ms later sorts first: %q, %q", early, late)
	}
	if x, y := a.New(now.Add(time.Hour)), b.New(now.Add(time.Hour)); x == y {
		t.Errorf("two generators made the same ID %q", x)
	}
}
