package jobs

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the same zones on every machine
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustCron(t *testing.T, expr string, loc *time.Location) *Cron {
	t.Helper()
	c, err := ParseCron(expr, loc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// nextN returns the n due times after from.
func nextN(c *Cron, from time.Time, n int) []string {
	var out []string
	for range n {
		from = c.Next(from)
		out = append(out, from.Format("01-02 15:04 MST"))
	}
	return out
}

func TestParseCron_invalid(t *testing.T) {
	for expr, msg := range map[string]string{
		"":                    "empty cron expression",
		"   ":                 "empty cron expression",
		"61 * * * *":          `invalid cron expression "61 * * * *"`,
		"* 24 * * *":          "invalid cron expression",
		"* * * *":             "invalid cron expression",
		"0 * * * * *":         "invalid cron expression", // no seconds field
		"*/0 * * * *":         "invalid cron expression",
		"* * * JANUARY *":     "invalid cron expression",
		"five past noon":      "invalid cron expression",
		"TZ=UTC 0 3 * * *":    "set timezone instead",
		"CRON_TZ=UTC 0 3 * *": "set timezone instead",
		"@every 5m":           `write every = "5m" instead`,
		"@reboot":             "invalid cron expression",
		"@triggered":          "is not a time of day",
		"0 0 30 2 *":          "matches no date in the next five years",
		"H * * * *":           "invalid cron expression",
		"0 0 L * *":           "invalid cron expression",
	} {
		c, err := ParseCron(expr, time.UTC)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseCron(%q) = %v, %v; want an error containing %q", expr, c, err, msg)
		}
	}
}

func TestCron_Next(t *testing.T) {
	seoul := mustZone(t, "Asia/Seoul")
	from := time.Date(2025, 8, 1, 12, 3, 0, 0, time.UTC) // a Friday
	for _, tt := range []struct {
		expr string
		loc  *time.Location
		want []string
	}{
		{"*/5 * * * *", time.UTC, []string{"08-01 12:05 UTC", "08-01 12:10 UTC"}},
		{" */5  * * * * ", time.UTC, []string{"08-01 12:05 UTC", "08-01 12:10 UTC"}},
		{"0 9 * * *", seoul, []string{"08-02 09:00 KST", "08-03 09:00 KST"}},
		{"30 3 * * MON-FRI", time.UTC, []string{"08-04 03:30 UTC", "08-05 03:30 UTC"}},
		// Day of month and day of week both restricted: either matches.
		{"0 0 13 * FRI", time.UTC, []string{"08-08 00:00 UTC", "08-13 00:00 UTC", "08-15 00:00 UTC"}},
		{"0 0 * * 7", time.UTC, []string{"08-03 00:00 UTC", "08-10 00:00 UTC"}},
		{"@hourly", time.UTC, []string{"08-01 13:00 UTC", "08-01 14:00 UTC"}},
		{"@daily", seoul, []string{"08-02 00:00 KST", "08-03 00:00 KST"}},
		{"@midnight", time.UTC, []string{"08-02 00:00 UTC"}},
		{"@weekly", time.UTC, []string{"08-03 00:00 UTC", "08-10 00:00 UTC"}},
		{"@monthly", time.UTC, []string{"09-01 00:00 UTC", "10-01 00:00 UTC"}},
		{"@yearly", time.UTC, []string{"01-01 00:00 UTC"}},
		{"@annually", time.UTC, []string{"01-01 00:00 UTC"}},
		{"0 0 29 2 *", time.UTC, []string{"02-29 00:00 UTC"}}, // 2028
	} {
		c := mustCron(t, tt.expr, tt.loc)
		got := nextN(c, from, len(tt.want))
		if strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
			t.Errorf("%q in %v from %v: %v, want %v", tt.expr, tt.loc, from, got, tt.want)
		}
		if c.String() != tt.expr || c.Location() != tt.loc {
			t.Errorf("%q: String %q, Location %v", tt.expr, c.String(), c.Location())
		}
	}
}

// TestCron_zone: times are read in the cron's zone whatever the zone of the
// time given, and come back in it.
func TestCron_zone(t *testing.T) {
	seoul := mustZone(t, "Asia/Seoul")
	c := mustCron(t, "0 9 * * *", seoul)
	after := time.Date(2025, 8, 1, 23, 0, 0, 0, time.UTC) // 08:00 in Seoul
	got := c.Next(after)
	if want := time.Date(2025, 8, 2, 0, 0, 0, 0, time.UTC); !got.Equal(want) || got.Location() != seoul {
		t.Errorf("Next(%v) = %v, want %v in Asia/Seoul", after, got, want)
	}
	if c := mustCron(t, "0 9 * * *", nil); c.Location() != time.Local {
		t.Errorf("nil location: %v, want Local", c.Location())
	}
}

// TestCron_DST: cron(8)'s rules across daylight saving changes.
func TestCron_DST(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")         // 2025-03-30 02:00 → 03:00, 2025-10-26 03:00 → 02:00
	lordHowe := mustZone(t, "Australia/Lord_Howe") // half-hour changes: 2025-04-06 02:00 → 01:30
	spring := time.Date(2025, 3, 29, 12, 0, 0, 0, berlin)
	fall := time.Date(2025, 10, 25, 12, 0, 0, 0, berlin)
	for _, tt := range []struct {
		name, expr string
		loc        *time.Location
		from       time.Time
		want       []string
	}{
		{"skipped time runs after the change", "30 2 * * *", berlin, spring,
			[]string{"03-30 03:30 CEST", "03-31 02:30 CEST"}},
		{"skipped hour on the hour", "0 2 * * *", berlin, spring,
			[]string{"03-30 03:00 CEST", "03-31 02:00 CEST"}},
		{"hourly across spring", "0 * * * *", berlin, time.Date(2025, 3, 30, 0, 30, 0, 0, berlin),
			[]string{"03-30 01:00 CET", "03-30 03:00 CEST", "03-30 04:00 CEST"}},
		{"repeated time runs once", "30 2 * * *", berlin, fall,
			[]string{"10-26 02:30 CEST", "10-27 02:30 CET"}},
		{"repeated hour, fixed hour", "*/20 2 * * *", berlin, fall,
			[]string{"10-26 02:00 CEST", "10-26 02:20 CEST", "10-26 02:40 CEST", "10-27 02:00 CET"}},
		{"hourly runs in each real hour", "0 * * * *", berlin, time.Date(2025, 10, 26, 0, 30, 0, 0, berlin),
			[]string{"10-26 01:00 CEST", "10-26 02:00 CEST", "10-26 02:00 CET", "10-26 03:00 CET"}},
		{"@hourly too", "@hourly", berlin, time.Date(2025, 10, 26, 1, 30, 0, 0, berlin),
			[]string{"10-26 02:00 CEST", "10-26 02:00 CET", "10-26 03:00 CET"}},
		{"every half hour", "*/30 * * * *", berlin, time.Date(2025, 10, 26, 1, 45, 0, 0, berlin),
			[]string{"10-26 02:00 CEST", "10-26 02:30 CEST", "10-26 02:00 CET", "10-26 02:30 CET", "10-26 03:00 CET"}},
		{"daily across fall", "@daily", berlin, fall,
			[]string{"10-26 00:00 CEST", "10-27 00:00 CET"}},
		{"half-hour change repeats once", "45 1 * * *", lordHowe, time.Date(2025, 4, 5, 12, 0, 0, 0, lordHowe),
			[]string{"04-06 01:45 +11", "04-07 01:45 +1030"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCron(t, tt.expr, tt.loc)
			got := nextN(c, tt.from, len(tt.want))
			if strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
				t.Errorf("%q from %v:\n got %v\nwant %v", tt.expr, tt.from, got, tt.want)
			}
		})
	}
}

// TestCron_Last: Last finds the due times Next finds, daylight saving
// changes included.
func TestCron_Last(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	for _, expr := range []string{"30 2 * * *", "0 * * * *", "*/20 2 * * *", "*/7 * * * *", "@daily", "0 0 13 * FRI", "15 3 * * SUN"} {
		c := mustCron(t, expr, berlin)
		for _, day := range []time.Time{
			time.Date(2025, 3, 29, 20, 0, 0, 0, berlin),
			time.Date(2025, 10, 25, 20, 0, 0, 0, berlin),
		} {
			// Every due time from Next over two days around the change,
			// and Last at, between and just before each.
			var dues []time.Time
			for n := c.Next(day.Add(-24 * time.Hour)); n.Before(day.Add(24 * time.Hour)); n = c.Next(n) {
				dues = append(dues, n)
			}
			for i := 1; i < len(dues); i++ {
				for _, tm := range []time.Time{dues[i].Add(-time.Nanosecond), dues[i-1].Add(dues[i].Sub(dues[i-1]) / 2)} {
					if got := c.Last(tm); !got.Equal(dues[i-1]) {
						t.Fatalf("%q: Last(%v) = %v, want %v", expr, tm, got, dues[i-1])
					}
				}
				if got := c.Last(dues[i]); !got.Equal(dues[i]) {
					t.Fatalf("%q: Last(%v) = %v, want itself", expr, dues[i], got)
				}
			}
		}
	}
}
