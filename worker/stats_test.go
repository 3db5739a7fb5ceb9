package worker

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRequestStats_RoundTrip(t *testing.T) {
	for _, st := range []Stats{
		{Requests: 0, Bounds: DefaultBounds(), Counts: make([]uint64, len(DefaultBounds())+1)},
		{Requests: 10, Bounds: DefaultBounds(), Counts: []uint64{1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 4}},
		{Requests: 3, Bounds: []time.Duration{time.Microsecond}, Counts: []uint64{1, 2}},
		{Requests: 5, Bounds: nil, Counts: []uint64{5}},
		{Requests: 1 << 63, Bounds: []time.Duration{time.Hour}, Counts: []uint64{1 << 62, 1 << 62}},
	} {
		text := st.String()
		got, err := ParseRequestStats(text)
		if err != nil {
			t.Errorf("ParseRequestStats(%q) = %v", text, err)
			continue
		}
		if !reflect.DeepEqual(got, st) {
			t.Errorf("ParseRequestStats(%q) = %+v, want %+v", text, got, st)
		}
	}
}

func TestParseRequestStats_Valid(t *testing.T) {
	got, err := ParseRequestStats("4;1000,5000;1,0,3")
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Requests: 4, Bounds: []time.Duration{time.Millisecond, 5 * time.Millisecond}, Counts: []uint64{1, 0, 3}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseRequestStats_Malformed(t *testing.T) {
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
			st, err := ParseRequestStats(tc.value)
			if err == nil {
				t.Fatalf("ParseRequestStats(%q) = %+v, want an error", tc.value, st)
			}
			if !errors.Is(err, ErrMalformedStats) {
				t.Errorf("error %v does not wrap ErrMalformedStats", err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}

func TestCheckBounds(t *testing.T) {
	if err := checkBounds(DefaultBounds()); err != nil {
		t.Errorf("DefaultBounds: %v", err)
	}
	for _, bounds := range [][]time.Duration{
		{0},
		{-time.Millisecond},
		{1500 * time.Nanosecond},
		{time.Second, time.Millisecond},
		{time.Millisecond, time.Millisecond},
	} {
		if err := checkBounds(bounds); err == nil {
			t.Errorf("checkBounds(%v) = nil, want an error", bounds)
		}
	}
}

func TestRecorder(t *testing.T) {
	rec := newRecorder([]time.Duration{time.Millisecond, 10 * time.Millisecond})
	if msg := rec.take(); msg != "" {
		t.Errorf("take with no requests = %q, want none", msg)
	}
	for _, d := range []time.Duration{0, time.Millisecond, time.Millisecond + 1, 10 * time.Millisecond, time.Hour} {
		rec.observe(d)
	}
	want := "FORKD_REQUESTS=5\nFORKD_REQUEST_STATS=5;1000,10000;2,2,1"
	if msg := rec.take(); msg != want {
		t.Errorf("take = %q, want %q", msg, want)
	}
	if msg := rec.take(); msg != "" {
		t.Errorf("second take with no new requests = %q, want none", msg)
	}
	rec.observe(20 * time.Millisecond)
	want = "FORKD_REQUESTS=6\nFORKD_REQUEST_STATS=1;1000,10000;0,0,1"
	if msg := rec.take(); msg != want {
		t.Errorf("take after one more = %q, want %q", msg, want)
	}
}
