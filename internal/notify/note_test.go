package notify

import (
	"bytes"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Note
	}{
		{"READY=1", Note{Ready: true}},
		{"WATCHDOG=1", Note{Watchdog: true}},
		{"WATCHDOG=trigger", Note{Trigger: true}},
		{"READY=0\nSTOPPING=1\nSTATUS=draining: 3 left", Note{Stopping: true, HasStatus: true, Status: "draining: 3 left"}},
		{"STATUS=", Note{HasStatus: true}},
		{"FORKD_REQUESTS=42\nFORKD_REQUEST_STATS=n=3", Note{Requests: 42, HasRequests: true, Stats: "n=3"}},
		{"FORKD_REQUESTS=-1", Note{}},
		{"BARRIER=1", Note{Barrier: true}},
		{"garbage\n\n=\nREADY", Note{}},
		{"READY=1\nREADY=0", Note{Ready: true}},
	} {
		if got := Parse([]byte(c.in)); got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
	if n := Parse([]byte("WATCHDOG=1")); !n.HeartbeatOnly() {
		t.Error("WATCHDOG=1 is not HeartbeatOnly")
	}
	if n := Parse([]byte("WATCHDOG=1\nSTATUS=x")); n.HeartbeatOnly() {
		t.Error("WATCHDOG=1 with STATUS= is HeartbeatOnly")
	}
}

// flags are the parts of a Note that every line sets on its own.
func flags(n Note) [7]bool {
	return [7]bool{n.Ready, n.Watchdog, n.Trigger, n.Stopping, n.HasStatus, n.HasRequests, n.Barrier}
}

// FuzzParseNote: whatever a worker sends, Parse does not panic, gives the
// same answer twice, ignores a trailing newline, parses lines on their own
// (a flag of a+"\n"+b is a flag of a or of b), and every value it keeps was
// in the payload.
func FuzzParseNote(f *testing.F) {
	f.Add([]byte("READY=1"), []byte("STATUS=serving"))
	f.Add([]byte("WATCHDOG=1"), []byte("WATCHDOG=trigger"))
	f.Add([]byte("FORKD_REQUESTS=18446744073709551615"), []byte("FORKD_REQUEST_STATS=n=1 p50=2"))
	f.Add([]byte("STOPPING=1\nBARRIER=1"), []byte("=\n\n\x00"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		n := Parse(a)
		if again := Parse(a); again != n {
			t.Fatalf("Parse(%q) twice: %+v, then %+v", a, n, again)
		}
		if nl := Parse(append(append([]byte(nil), a...), '\n')); nl != n {
			t.Fatalf("Parse(%q) = %+v, with a trailing newline %+v", a, n, nl)
		}
		nb := Parse(b)
		joined := Parse(bytes.Join([][]byte{a, b}, []byte("\n")))
		fa, fb, fj := flags(n), flags(nb), flags(joined)
		for i := range fj {
			if fj[i] != (fa[i] || fb[i]) {
				t.Fatalf("Parse(%q + \\n + %q): flags %v, want %v | %v", a, b, fj, fa, fb)
			}
		}
		if n.HasStatus && !bytes.Contains(a, []byte("STATUS="+n.Status)) {
			t.Fatalf("Parse(%q): status %q is not in the payload", a, n.Status)
		}
		if n.Stats != "" && !bytes.Contains(a, []byte("FORKD_REQUEST_STATS="+n.Stats)) {
			t.Fatalf("Parse(%q): stats %q are not in the payload", a, n.Stats)
		}
		if n.HasRequests && !bytes.Contains(a, []byte("FORKD_REQUESTS=")) {
			t.Fatalf("Parse(%q): requests %d are not in the payload", a, n.Requests)
		}
		if n.HeartbeatOnly() && !n.Watchdog {
			t.Fatalf("Parse(%q): heartbeat-only without WATCHDOG=1", a)
		}
		if n.PID != 0 || !n.At.IsZero() {
			t.Fatalf("Parse(%q) set a sender: %+v", a, n)
		}
	})
}
