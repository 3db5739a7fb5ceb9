package sdk

import (
	"os"
	"strconv"
)

// The environment variables forkd sets for each worker, besides systemd's
// LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID, NOTIFY_SOCKET, WATCHDOG_USEC and
// WATCHDOG_PID.
const (
	envWorkerID   = "FORKD_WORKER_ID"  // the worker's stable slot, 0…N-1
	envGeneration = "FORKD_GENERATION" // grows by one with each reload
	envInstance   = "FORKD_INSTANCE"   // the config's server.name
)

// ID returns the worker's slot, 0…N-1, from FORKD_WORKER_ID. A replacement
// worker (after a crash, a recycle or a reload) gets the slot of the one it
// replaces. ID returns -1 when the variable is unset or not a non-negative
// decimal number: the program is not running under forkd.
func ID() int {
	id, err := strconv.Atoi(os.Getenv(envWorkerID))
	if err != nil || id < 0 {
		return -1
	}
	return id
}

// Generation returns the worker's generation from FORKD_GENERATION: every
// reload starts a new generation of workers beside the old one. It returns
// 0 when the variable is unset or malformed (not running under forkd).
func Generation() uint64 {
	g, err := strconv.ParseUint(os.Getenv(envGeneration), 10, 64)
	if err != nil {
		return 0
	}
	return g
}

// Instance returns the name of the forkd instance the worker belongs to,
// from FORKD_INSTANCE, or "" when it is unset (not running under forkd).
func Instance() string {
	return os.Getenv(envInstance)
}
