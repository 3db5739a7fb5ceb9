package workers

import (
	"strings"
	"testing"
)

// TestQlenAdvice: a notify queue shorter than the pool is worth a warning
// that says how to lengthen it; one that holds a datagram per worker is not.
func TestQlenAdvice(t *testing.T) {
	if got := qlenAdvice(512, 512); got != "" {
		t.Errorf("qlen 512, 512 workers: advice %q, want none", got)
	}
	if got := qlenAdvice(10, 4); got != "" {
		t.Errorf("qlen 10, 4 workers: advice %q, want none", got)
	}
	got := qlenAdvice(10, 64)
	for _, want := range []string{"max_dgram_qlen is 10", "64 workers", "sysctl -w net.unix.max_dgram_qlen=512"} {
		if !strings.Contains(got, want) {
			t.Errorf("qlen 10, 64 workers: advice %q lacks %q", got, want)
		}
	}
}
