package jobs

import "testing"

func TestDecide(t *testing.T) {
	for _, tt := range []struct {
		policy           Overlap
		running, waiting bool
		want             Action
	}{
		{OverlapSkip, false, false, Start},
		{OverlapQueue, false, false, Start},
		{OverlapReplace, false, false, Start},
		{OverlapSkip, true, false, Skip},
		{OverlapQueue, true, false, Queue},
		{OverlapReplace, true, false, Replace},
		// At most one run waits.
		{OverlapSkip, true, true, Skip},
		{OverlapQueue, true, true, Skip},
		{OverlapReplace, true, true, Skip},
		// Nothing in flight: the run starts (a waiting run starts as the
		// one in flight ends, so none waits by then).
		{OverlapQueue, false, true, Start},
		{"", true, false, Skip},
		{"sometimes", true, false, Skip},
	} {
		if got := Decide(tt.policy, tt.running, tt.waiting); got != tt.want {
			t.Errorf("Decide(%q, running %v, waiting %v) = %v, want %v", tt.policy, tt.running, tt.waiting, got, tt.want)
		}
	}
}

func TestOverlap_Valid(t *testing.T) {
	for o, want := range map[Overlap]bool{"skip": true, "queue": true, "replace": true, "": false, "Skip": false, "kill": false} {
		if got := o.Valid(); got != want {
			t.Errorf("Overlap(%q).Valid() = %v, want %v", o, got, want)
		}
	}
}

func TestAction_String(t *testing.T) {
	for a, want := range map[Action]string{Start: "start", Skip: "skip", Queue: "queue", Replace: "replace", 0: "Action(?)"} {
		if got := a.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(a), got, want)
		}
	}
}
