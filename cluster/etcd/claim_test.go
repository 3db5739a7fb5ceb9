package etcd

import (
	"testing"
	"time"
)

// FuzzParseClaim: a schedule key's value, whatever another writer left in
// etcd, parses or fails without panicking; what claimValue writes parses
// back, and orders as its period.
func FuzzParseClaim(f *testing.F) {
	f.Add([]byte("00001767225600000000000 host/web"), int64(1767225600000000000))
	f.Add([]byte("garbage"), int64(0))
	f.Add([]byte(""), int64(-1))
	f.Fuzz(func(t *testing.T, v []byte, nanos int64) {
		_, _, _ = parseClaim(v)
		if nanos < 0 {
			return
		}
		at := time.Unix(0, nanos)
		got, member, err := parseClaim([]byte(claimValue(at, "h/i")))
		if err != nil || !got.Equal(at) || member != "h/i" {
			t.Fatalf("claimValue(%v) parsed back as %v %q %v", at, got, member, err)
		}
		later := at.Add(time.Nanosecond)
		if nanos < 1<<62 && !(claimValue(at, "zzz") < claimPeriod(later)) {
			t.Fatalf("the claim of %v does not sort before the period %v", at, later)
		}
	})
}
