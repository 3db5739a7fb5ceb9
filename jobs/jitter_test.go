package jobs

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, j := range []time.Duration{0, -time.Second} {
		if d := Delay(j, r); d != 0 {
			t.Errorf("Delay(%v) = %v, want 0", j, d)
		}
	}
	const jitter = 10 * time.Second
	var low, high bool
	for range 10000 {
		d := Delay(jitter, r)
		if d < 0 || d >= jitter {
			t.Fatalf("Delay(%v) = %v, want [0, %v)", jitter, d, jitter)
		}
		low = low || d < jitter/10
		high = high || d > jitter*9/10
	}
	if !low || !high {
		t.Errorf("10000 delays never fell in the first or last tenth (low %v, high %v)", low, high)
	}
	if d := Delay(time.Nanosecond, nil); d != 0 {
		t.Errorf("Delay(1ns, nil) = %v, want 0", d)
	}
	if d := Delay(jitter, nil); d < 0 || d >= jitter {
		t.Errorf("Delay(%v, nil) = %v", jitter, d)
	}
	// The same source gives the same delays: runs can be replayed in tests.
	a, b := rand.New(rand.NewPCG(9, 9)), rand.New(rand.NewPCG(9, 9))
	for range 100 {
		if x, y := Delay(jitter, a), Delay(jitter, b); x != y {
			t.Fatalf("same seed, delays %v and %v", x, y)
		}
	}
}
