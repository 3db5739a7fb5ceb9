package config

// ReadyMode is worker.ready: when a worker counts as serving.
type ReadyMode string

const (
	// ReadyNotify: the worker sends READY=1 on NOTIFY_SOCKET and heartbeats
	// with WATCHDOG=1.
	ReadyNotify ReadyMode = "notify"
	// ReadyStarted: the worker is ready ReadyDelay after it started; it is
	// not expected to heartbeat.
	ReadyStarted ReadyMode = "started"
)

// Valid reports whether m is ReadyNotify or ReadyStarted.
func (m ReadyMode) Valid() bool {
	return m == ReadyNotify || m == ReadyStarted
}

// StartMode says when a singleton starts.
type StartMode string

const (
	// StartAfterReady: once the workers serve (when_ready).
	StartAfterReady StartMode = "after_ready"
	// StartBeforeWorkers: before the first worker starts, and forkd waits
	// until it is ready before starting them.
	StartBeforeWorkers StartMode = "before_workers"
)

// Valid reports whether m is one of the start modes.
func (m StartMode) Valid() bool {
	return m == StartAfterReady || m == StartBeforeWorkers
}
