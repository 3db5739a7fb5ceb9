package jobs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// FuzzParseCron: any expression is parsed or refused without a panic, and
// a parsed one gives due times in order that Last finds again.
func FuzzParseCron(f *testing.F) {
	for _, seed := range []string{"*/5 * * * *", "30 3 * * MON-FRI", "0 0 13 * FRI", "@daily", "@every 5m",
		"TZ=UTC * * * * *", "0 0 30 2 *", "1-59/7 2,3 */2 JAN-MAR 0-7", "? * * * ?", "", "@", "* * * * * * *"} {
		f.Add(seed)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		f.Fatal(err)
	}
	from := time.Date(2025, 10, 25, 22, 0, 0, 0, berlin) // before a fall-back change
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := ParseCron(expr, berlin)
		if err != nil {
			return
		}
		prev := from
		for range 3 {
			next := c.Next(prev)
			if next.IsZero() {
				return
			}
			if !next.After(prev) {
				t.Fatalf("%q: Next(%v) = %v, not after", expr, prev, next)
			}
			if last := c.Last(next); !last.Equal(next) {
				t.Fatalf("%q: Last(%v) = %v, want itself", expr, next, last)
			}
			prev = next
		}
	})
}

// FuzzOpenState: any state file is read or reported, never fatal; one that
// is read is written back the same.
func FuzzOpenState(f *testing.F) {
	for _, seed := range []string{`{"version": 1, "last_run": {"a": "2025-06-01T03:00:00Z"}}`, `{"version": 1, "last_run": {}}`,
		`{"version": 2}`, `{`, "", `{"version": 1, "last_run": {"a": "0001-01-01T00:00:00Z"}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenState(dir)
		if s == nil {
			t.Fatal("no State")
		}
		if err != nil {
			if len(s.Names()) != 0 {
				t.Fatalf("a warning (%v) with names %v", err, s.Names())
			}
			return
		}
		if err := s.Save(); err != nil {
			t.Fatal(err)
		}
		s2, err := OpenState(dir)
		if err != nil {
			t.Fatalf("reading back what Save wrote: %v", err)
		}
		if !slices.Equal(s.Names(), s2.Names()) {
			t.Fatalf("names %v, read back %v", s.Names(), s2.Names())
		}
		for _, name := range s.Names() {
			if !s.Last(name).Equal(s2.Last(name)) {
				t.Fatalf("%s: %v, read back %v", name, s.Last(name), s2.Last(name))
			}
		}
	})
}
