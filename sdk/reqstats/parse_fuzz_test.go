package reqstats

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// FuzzParse feeds Parse arbitrary field values, as a worker could send
// them in FORKD_REQUEST_STATS. It must return stats or an error wrapping
// ErrMalformed, never panic; stats it returns are well-formed (as Parse
// documents), and formatted with String they parse to the same stats.
//
// The seed corpus (testdata/fuzz/FuzzParse) holds the values of the table
// tests and what the worker SDK sends.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, value string) {
		st, err := Parse(value)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrMalformed", value, err)
			}
			if !reflect.DeepEqual(st, Stats{}) {
				t.Fatalf("Parse(%q) = %+v with error %v, want zero stats", value, st, err)
			}
			return
		}
		checkWellFormed(t, value, st)
		text := st.String()
		again, err := Parse(text)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, whose String %q does not parse: %v", value, st, text, err)
		}
		if !reflect.DeepEqual(again, st) {
			t.Fatalf("Parse(%q) = %+v, but Parse(%q) = %+v", value, st, text, again)
		}
		if again.String() != text {
			t.Fatalf("String is not stable: %q, then %q", text, again.String())
		}
	})
}

// checkWellFormed fails t unless st, parsed from value, is what Parse
// promises: bounds positive, whole microseconds and increasing, one count
// more than bounds, counts summing to Requests.
func checkWellFormed(t *testing.T, value string, st Stats) {
	t.Helper()
	for i, b := range st.Bounds {
		if b <= 0 || b%time.Microsecond != 0 || i > 0 && b <= st.Bounds[i-1] {
			t.Fatalf("Parse(%q): bad bound %d (%v) in %v", value, i, b, st.Bounds)
		}
	}
	if len(st.Counts) != len(st.Bounds)+1 {
		t.Fatalf("Parse(%q): %d counts for %d bounds", value, len(st.Counts), len(st.Bounds))
	}
	var sum uint64
	for _, c := range st.Counts {
		if sum+c < sum {
			t.Fatalf("Parse(%q): counts %v overflow", value, st.Counts)
		}
		sum += c
	}
	if sum != st.Requests {
		t.Fatalf("Parse(%q): counts sum to %d, requests %d", value, sum, st.Requests)
	}
}
