package reqstats

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// eleven are 11 bucket bounds, as many as the worker SDK's default.
var eleven = []time.Duration{time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second}

func TestParse_RoundTrip(t *testing.T) {
	for _, st := range []Stats{
		{Requests: 0, Bounds: eleven, Counts: make([]uint64, len(eleven)+1)},
		{Requests: 10, Bounds: eleven, Counts: []uint64{1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 4}},
		{Requests: 3, Bounds: []time.Duration{time.Microsecond}, Counts: []uint64{1, 2}},
		{Requests: 5, Bounds: nil, Counts: []uint64{5}},
		{Requests: 1 << 63, Bounds: []time.Duration{time.Hour}, Counts: []uint64{1 << 62, 1 << 62}},
	} {
		text := st.String()
		got, err := Parse(text)
		if err != nil {
			t.Errorf("Parse(%q) = %v", text, err)
			continue
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("Parse(%q) = %+v, want %+v", text, got, st)
		}
	}
}

func TestParse_Valid(t *testing.T) {
	got, err := Parse("4;1000,5000;1,0,3")
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Requests: 4, Bounds: []time.Duration{time.Millisecond, 5 * time.Millisecond}, Counts: []uint64{1, 0, 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParse_Malformed(t *testing.T) {
	for _, tc := range []struct{ name, value, why string }{
		{"empty", "", "3 ';'-separated parts"},
		{"two parts", "1;1000", "3 ';'-separated parts"},
		{"four parts", "1;1000;1,0;", "3 ';'-separated parts"},
		{"no request count", ";1000;0,0", "request count"},
		{"negative requests", "-1;1000;0,0", "request count"},
		{"signed requests", "+1;1000;1,0", "request count"},
		{"hex requests", "0x1;1000;1,0", "request count"},
		{"request overflow", "18446744073709551616;1000;0,0", "request count"},
		{"bound not a number", "1;1ms;1,0", "bound 1"},
		{"empty bound", "1;1000,,5000;1,0,0,0", "bound 2"},
		{"trailing comma in bounds", "1;1000,;1,0,0", "bound 2"},
		{"zero bound", "1;0;1,0", "bound 1 is 0"},
		{"bound too large", "1;9223372036854776;1,0", "bound 1"},
		{"decreasing bounds", "1;5000,1000;1,0,0", "not above"},
		{"equal bounds", "1;1000,1000;1,0,0", "not above"},
		{"too few counts", "1;1000,5000;1,0", "need 3 counts"},
		{"too many counts", "1;1000;1,0,0", "need 2 counts"},
		{"no counts", "0;1000;", "need 2 counts, got 1"},
		{"empty count", "0;1000;0,", "count 2"},
		{"count not a number", "1;1000;x,1", "count 1"},
		{"negative count", "0;1000;-1,1", "count 1"},
		{"sum too small", "3;1000;1,1", "sum to 2"},
		{"sum too large", "1;1000;1,1", "sum to 2"},
		{"counts overflow", "1;1000;18446744073709551615,2", "overflow"},
		{"spaces", "1; 1000;1,0", "bound 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Parse(tc.value)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tc.value, st)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}
