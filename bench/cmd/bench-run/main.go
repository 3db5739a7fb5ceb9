// Command bench-run is the schedule run of the benchmarks of package bench:
// the command of the [[schedule]] tables of scenario 12. First thing in
// main it reads the clock, then sends one datagram to the unixgram socket
// named by BENCH_PROBE,
//
//	run PID START-UNIX-NANOS FORKD_SCHEDULE FORKD_SCHEDULED_AT FORKD_RUN_ID
//
// (an empty variable as "-"), and exits 0: the run's own start time beside
// the due time forkd gave it. It imports only the standard library, so that
// its start is that of a small Go program. It exits 1, with the error on
// stderr, when it cannot report.
package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	start := time.Now()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: os.Getenv("BENCH_PROBE"), Net: "unixgram"})
	if err != nil {
		os.Stderr.WriteString("bench-run: " + err.Error() + "\n")
		os.Exit(1)
	}
	msg := "run " + strconv.Itoa(os.Getpid()) + " " + strconv.FormatInt(start.UnixNano(), 10) + " " +
		field("FORKD_SCHEDULE") + " " + field("FORKD_SCHEDULED_AT") + " " + field("FORKD_RUN_ID")
	if _, err := c.Write([]byte(msg)); err != nil {
		os.Stderr.WriteString("bench-run: " + err.Error() + "\n")
		os.Exit(1)
	}
}

// field returns the variable key, or "-" when it is empty.
func field(key string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return "-"
}
