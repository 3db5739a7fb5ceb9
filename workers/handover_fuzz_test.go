package workers

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// handOver puts data in a memfd named by FORKD_UPGRADE_FD, as an
// upgrading master does, and returns what TakeHandover makes of it.
func handOver(t *testing.T, data []byte) (*Handover, error) {
	t.Helper()
	fd, err := unix.MemfdCreate("forkd-upgrade-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd: %v", err)
	}
	if len(data) > 0 {
		if _, err := unix.Write(fd, data); err != nil {
			unix.Close(fd)
			t.Fatalf("write memfd: %v", err)
		}
	}
	// TakeHandover closes fd and unsets the variable.
	t.Setenv(upgradeEnv, strconv.Itoa(fd))
	return TakeHandover()
}

// FuzzTakeHandover feeds TakeHandover arbitrary upgrade state. It must
// return a handover or an error, never panic; it unsets FORKD_UPGRADE_FD
// either way; a handover it returns is one adopt can take (see
// Handover.check); and that handover, encoded as execUpgrade encodes it,
// decodes to the same handover.
//
// The seed corpus (testdata/fuzz/FuzzTakeHandover) holds the state of a
// pool mid-reload, of a master from before deadlines and config were
// handed over, and malformed states.
func FuzzTakeHandover(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := handOver(t, data)
		if v, ok := os.LookupEnv(upgradeEnv); ok {
			t.Fatalf("TakeHandover left %s=%s set", upgradeEnv, v)
		}
		if err != nil {
			if h != nil {
				t.Fatalf("TakeHandover returned a handover with error %v", err)
			}
			if !strings.HasPrefix(err.Error(), "workers: read upgrade state: ") {
				t.Fatalf("error %q does not say what failed", err)
			}
			return
		}
		if h == nil {
			t.Fatal("TakeHandover returned neither a handover nor an error")
		}
		if err := h.check(); err != nil {
			t.Fatalf("TakeHandover returned a handover that does not check: %v", err)
		}
		enc, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("encode the handover: %v", err)
		}
		again, err := handOver(t, enc)
		if err != nil {
			t.Fatalf("decode the encoded handover %s: %v", enc, err)
		}
		enc2, err := json.Marshal(again)
		if err != nil {
			t.Fatalf("encode the handover again: %v", err)
		}
		if !bytes.Equal(enc, enc2) || !sameHandover(h, again) {
			t.Fatalf("the handover changed on a round trip:\n%s\n%s", enc, enc2)
		}
	})
}

// sameHandover reports whether a and b hold the same state, times compared
// as instants.
func sameHandover(a, b *Handover) bool {
	if len(a.Workers) != len(b.Workers) {
		return false
	}
	for i := range a.Workers {
		x, y := a.Workers[i], b.Workers[i]
		if !x.Started.Equal(y.Started) || !x.ReadyAt.Equal(y.ReadyAt) || !x.Due.Equal(y.Due) {
			return false
		}
	}
	strip := func(h *Handover) Handover {
		c := *h
		c.Workers = nil
		for _, w := range h.Workers {
			w.Started, w.ReadyAt, w.Due = time.Time{}, time.Time{}, time.Time{}
			c.Workers = append(c.Workers, w)
		}
		return c
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

// sampleHandover is what a pool of two workers in the middle of a reload
// hands over: one worker of the current generation ready, one booting, one
// of the old generation stopping; and the metrics endpoint's socket.
func sampleHandover() *Handover {
	t0 := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	return &Handover{
		Sockets: []HandoverSocket{
			{Name: "web", Addr: "tcp://127.0.0.1:8000", FD: 3},
			{Name: "admin", Addr: "unix:/run/shop/api.sock", FD: 4},
		},
		NotifyFD: 5, NotifyDir: "/run/forkd/shop-api", NotifyPath: "/run/forkd/shop-api/notify",
		NextGen: 3, Current: 2, Target: 2, EverReady: true,
		Workers: []HandoverWorker{
			{ID: 0, PID: 4242, Generation: 2, Phase: phaseReady.String(), InSlot: true,
				Started: t0, ReadyAt: t0.Add(1500 * time.Millisecond), Requests: 17},
			{ID: 1, PID: 4243, Generation: 2, Phase: phaseStarting.String(), InSlot: true,
				Started: t0.Add(time.Second), Due: t0.Add(31 * time.Second), DueKind: "boot"},
			{ID: 1, PID: 4100, Generation: 1, Phase: phaseStopping.String(),
				Started: t0.Add(-time.Hour), ReadyAt: t0.Add(-time.Hour + time.Second), Requests: 9000,
				Reason: "reload", Due: t0.Add(30 * time.Second), DueKind: "kill"},
		},
		Config: HandoverConfig{Workers: 2, Name: "shop-api", Backlog: 2048,
			Bind: []string{"tcp://127.0.0.1:8000?name=web", "unix:/run/shop/api.sock?name=admin"}},
		Failures: []int{0, 3},
		Extra:    []HandoverSocket{{Name: "metrics", Addr: "tcp://127.0.0.1:9150", FD: 6}},
	}
}

// TestTakeHandover_RoundTrip: what execUpgrade writes, TakeHandover reads.
func TestTakeHandover_RoundTrip(t *testing.T) {
	want := sampleHandover()
	enc, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := handOver(t, enc)
	if err != nil {
		t.Fatal(err)
	}
	if !sameHandover(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// TestTakeHandover_Unusable: a handover adopt cannot take is an error, not
// a panic (a negative slot) or a kill(-1) (pid -1) later.
func TestTakeHandover_Unusable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *Handover)
		why    string
	}{
		{"pid -1", func(h *Handover) { h.Workers[1].PID = -1 }, "worker 1: pid -1"},
		{"pid 0", func(h *Handover) { h.Workers[0].PID = 0 }, "worker 0: pid 0"},
		{"negative slot", func(h *Handover) { h.Workers[0].ID = -1 }, "worker -1: pid 4242"},
		{"negative target", func(h *Handover) { h.Target = -1 }, "target -1 out of range"},
		{"target too big", func(h *Handover) { h.Target = 1 << 40 }, "target 1099511627776 out of range"},
		{"negative config workers", func(h *Handover) { h.Config.Workers = -2 }, "config workers -2 out of range"},
		{"negative notify fd", func(h *Handover) { h.NotifyFD = -1 }, "notify socket fd -1"},
		{"negative socket fd", func(h *Handover) { h.Sockets[1].FD = -1 }, "socket unix:/run/shop/api.sock: fd -1"},
		{"negative extra fd", func(h *Handover) { h.Extra[0].FD = -1 }, "socket tcp://127.0.0.1:9150: fd -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := sampleHandover()
			tc.change(h)
			enc, err := json.Marshal(h)
			if err != nil {
				t.Fatal(err)
			}
			got, err := handOver(t, enc)
			if err == nil {
				t.Fatalf("got %+v, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}

// TestTakeHandover_Malformed: state that is not a handover is an error.
func TestTakeHandover_Malformed(t *testing.T) {
	for _, data := range []string{"", "{", `{"target": "2"}`, `{"workers": {}}`, `{"workers": [{"started": "yesterday"}]}`} {
		if h, err := handOver(t, []byte(data)); err == nil {
			t.Errorf("TakeHandover(%q) = %+v, want an error", data, h)
		}
	}
}
