package sdk

import (
	"testing"
	"time"
)

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
		rec.begin()
		rec.observe(d)
	}
	want := "FORKD_REQUESTS=5\nFORKD_REQUEST_STATS=5;1000,10000;2,2,1\nFORKD_REQUEST_SUM_USEC=3600012000\nFORKD_REQUESTS_INFLIGHT=0"
	if msg := rec.take(); msg != want {
		t.Errorf("take = %q, want %q", msg, want)
	}
	if msg := rec.take(); msg != "" {
		t.Errorf("second take with no new requests = %q, want none", msg)
	}
	rec.begin()
	rec.observe(20 * time.Millisecond)
	want = "FORKD_REQUESTS=6\nFORKD_REQUEST_STATS=1;1000,10000;0,0,1\nFORKD_REQUEST_SUM_USEC=20000\nFORKD_REQUESTS_INFLIGHT=0"
	if msg := rec.take(); msg != want {
		t.Errorf("take after one more = %q, want %q", msg, want)
	}
	rec.begin()
	if msg, want := rec.take(), "FORKD_REQUESTS_INFLIGHT=1"; msg != want {
		t.Errorf("take with one request in progress = %q, want %q", msg, want)
	}
	if msg := rec.take(); msg != "" {
		t.Errorf("take with the same request still in progress = %q, want none", msg)
	}
}
