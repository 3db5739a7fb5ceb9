package benchworker

import (
	"fmt"
	"os"
	"time"
)

// floodTick is how often the flood sends what is due; floodReportEvery how
// often it reports its count.
const (
	floodTick        = 10 * time.Millisecond
	floodReportEvery = 250 * time.Millisecond
)

// flood sends rate datagrams a second to NOTIFY_SOCKET, alternately
// WATCHDOG=1 and STATUS=flood N, while toggled on (each value on toggle
// flips it; it starts off), and reports its running count to the probe
// (KindSent) every floodReportEvery, and once more when toggled off
// (KindFlooded). A master that reads slowly
// makes the sends block (a unixgram socket's queue is bounded), so the
// achieved rate is also what the master kept up with.
func flood(rate int, toggle <-chan os.Signal, probe *probeConn) {
	conn := dialNotify()
	if conn == nil {
		return
	}
	defer conn.Close()
	tick := time.NewTicker(floodTick)
	tick.Stop()
	report := time.NewTicker(floodReportEvery)
	report.Stop()
	var (
		on          bool
		onAt        time.Time
		sent, since uint64 // in all; since onAt
	)
	maxBurst := uint64(max(rate/10, 1)) // never catch up more than 100 ms at once
	for {
		select {
		case <-toggle:
			on = !on
			if on {
				onAt, since = time.Now(), 0
				tick.Reset(floodTick)
				report.Reset(floodReportEvery)
				probe.SendCount(KindSent, sent, time.Now())
			} else {
				tick.Stop()
				report.Stop()
				probe.SendCount(KindFlooded, sent, time.Now())
			}
		case <-tick.C:
			due := uint64(float64(rate) * time.Since(onAt).Seconds())
			for n := uint64(0); since < due && n < maxBurst; n++ {
				var err error
				if sent%2 == 0 {
					_, err = conn.Write([]byte("WATCHDOG=1"))
				} else {
					_, err = fmt.Fprintf(conn, "STATUS=flood %d", sent)
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "bench worker: flood: %v\n", err)
					return
				}
				sent++
				since++
			}
			if since < due {
				since = due // fell behind: do not burst to catch up
			}
		case <-report.C:
			probe.SendCount(KindSent, sent, time.Now())
		}
	}
}
