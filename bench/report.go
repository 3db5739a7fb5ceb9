package bench

import (
	"fmt"
	"math"
	"strings"
	"sync"
)

// Row is one figure of the results table: forkd's and Gunicorn's value of
// it, measured in the same run, and forkd's goal.
type Row struct {
	// Scenario names the benchmark ("1 start").
	Scenario string
	// Figure says what was measured ("exec → READY=1, median").
	Figure string
	// Unit is the values' unit: "ms", "µs", "s", "MB", "/s", "%", or "" for
	// a count or a ratio.
	Unit string
	// Goal is forkd's goal for the figure; a zero Goal means none.
	Goal Goal
	// Forkd and Gunicorn are the values; NaN when not measured.
	Forkd, Gunicorn float64
}

// Goal is a bound for forkd's value of a figure: an upper bound, or a
// lower one when AtLeast is set.
type Goal struct {
	// Text is how the table states it ("≤ boot + 5 ms = 7.10 ms").
	Text string
	// Limit is the bound itself, in the row's unit.
	Limit float64
	// AtLeast makes Limit a lower bound (a throughput, a worker count).
	AtLeast bool
}

// Set reports whether g is a goal rather than "none".
func (g Goal) Set() bool { return g.Text != "" }

// Met reports whether forkd's value v meets the goal: v ≤ Limit, or
// v ≥ Limit when AtLeast is set.
func (g Goal) Met(v float64) bool {
	if g.AtLeast {
		return !math.IsNaN(v) && v >= g.Limit
	}
	return !math.IsNaN(v) && v <= g.Limit
}

// Ratio returns Forkd/Gunicorn, NaN when either is missing or Gunicorn's
// is 0.
func (r Row) Ratio() float64 {
	if math.IsNaN(r.Forkd) || math.IsNaN(r.Gunicorn) || r.Gunicorn == 0 {
		return math.NaN()
	}
	return r.Forkd / r.Gunicorn
}

// Verdict returns "pass" or "MISS" for a row with a goal, "—" otherwise.
func (r Row) Verdict() string {
	switch {
	case !r.Goal.Set():
		return "—"
	case r.Goal.Met(r.Forkd):
		return "pass"
	default:
		return "MISS"
	}
}

// Report collects the rows and notes of one run; it is safe for
// concurrent use.
type Report struct {
	mu    sync.Mutex
	rows  []Row
	notes []string
}

// Add appends a row.
func (r *Report) Add(row Row) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row)
}

// Note appends a line printed under the table.
func (r *Report) Note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// Rows returns a copy of the rows added so far.
func (r *Report) Rows() []Row {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Row(nil), r.rows...)
}

// Table renders the rows as a markdown table followed by the notes.
func (r *Report) Table() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("| scenario | figure | forkd goal | forkd | Gunicorn | forkd / Gunicorn | goal |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | --- |\n")
	for _, row := range r.rows {
		goal := "—"
		if row.Goal.Set() {
			goal = row.Goal.Text
		}
		ratio := "—"
		if v := row.Ratio(); !math.IsNaN(v) {
			ratio = fmt.Sprintf("%.3g×", v)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", row.Scenario, row.Figure, goal,
			FormatValue(row.Forkd, row.Unit), FormatValue(row.Gunicorn, row.Unit), ratio, row.Verdict())
	}
	if len(r.notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// FormatValue renders v with its unit and about three significant digits;
// NaN renders as "—", and a whole count (unit "") without decimals.
func FormatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "—"
	}
	if unit == "" && v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	var s string
	switch a := math.Abs(v); {
	case a >= 100:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	case a >= 1:
		s = fmt.Sprintf("%.2f", v)
	default:
		s = fmt.Sprintf("%.3f", v)
	}
	switch unit {
	case "/s":
		return s + "/s"
	case "":
		return s
	}
	return s + " " + unit
}
