package benchworker

// The environment variables of the bench worker.
const (
	// EnvProbe names the unixgram socket the worker reports its probe
	// events to (the Kind constants); unset, it reports nothing.
	EnvProbe = "BENCH_PROBE"
	// EnvAlone set to "1" makes the worker take the inherited sockets
	// whatever LISTEN_PID says: the benchmark runs it without a master to
	// time its own boot, and cannot know its pid before exec.
	EnvAlone = "BENCH_ALONE"
	// EnvBootDelay is a boot time in milliseconds the worker spends after
	// its "start" probe and before it serves (an application's imports
	// and warm-up); unset or 0, none. bench/app.py sleeps as long at
	// import when Gunicorn's workers get it.
	EnvBootDelay = "BENCH_BOOT_DELAY_MS"
	// EnvCountRequests set to "1" makes the worker report its finished
	// requests as FORKD_REQUESTS=<total> on NOTIFY_SOCKET, as the worker
	// SDK does for max_requests: at most every 100 ms, and once more 100 ms
	// after the last request of a burst.
	EnvCountRequests = "BENCH_COUNT_REQUESTS"
	// EnvNotifyRate is a rate in datagrams per second: SIGUSR1 toggles a
	// flood of WATCHDOG=1 and STATUS= datagrams at that rate on
	// NOTIFY_SOCKET, and while it runs the worker reports how many it has
	// sent (KindSent) every 250 ms.
	EnvNotifyRate = "BENCH_NOTIFY_RATE"
	// EnvSyncMS is a time in milliseconds: the worker serves as a
	// synchronous worker does, one connection at a time and one request
	// per connection, each request taking that long; the connections
	// beyond it wait in the listening socket's accept queue. Unset or 0:
	// concurrently, at once.
	EnvSyncMS = "BENCH_SYNC_MS"
)
