package bench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
)

// ErrNoPort is returned by FreePort when no port in the range was free.
var ErrNoPort = errors.New("bench: no free port")

// FreePort returns a TCP port in lo…hi on 127.0.0.1 that was free a moment
// ago: it tries random ones by listening on them. forkd's config takes no
// port 0, so the benchmarks pick ports this way (below 32768, out of the
// kernel's ephemeral range).
func FreePort(lo, hi int) (int, error) {
	for range 200 {
		port := lo + rand.IntN(hi-lo+1)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("pick a port in %d…%d: %w", lo, hi, ErrNoPort)
}
