package metrics

import "strings"

// Exit reasons, the values of forkd_worker_exits_total's reason label: a
// bounded vocabulary the arbiter's free-text reasons map to (exitReason).
const (
	ExitCrashed     = "crashed"      // exited or was killed unasked
	ExitTimeout     = "timeout"      // missed its heartbeat, or asked to be treated as hung
	ExitBootTimeout = "boot_timeout" // not ready within boot_timeout
	ExitRecycled    = "recycled"     // max_requests or max_lifetime
	ExitMemory      = "memory"       // recycled for its memory
	ExitOOM         = "oom"          // killed by the kernel's OOM killer
	ExitReload      = "reload"       // replaced by a new generation, or a reload rolled back
	ExitScale       = "scale"        // scaled down (SIGTTOU, SetWorkers)
	ExitAutoscale   = "autoscale"    // scaled down by the autoscaler
	ExitExited      = "exited"       // stopped by itself (STOPPING=1)
	ExitStopped     = "stopped"      // the master stopped
	ExitOther       = "other"        // anything else
)

// Start reasons, the values of forkd_worker_starts_total's reason label.
const (
	StartInitial = "initial" // the instance's first worker of a slot
	StartReload  = "reload"  // a new generation's worker
	StartScale   = "scale"   // a slot added by scaling up
	StartReplace = "replace" // the slot's previous worker exited
	StartRecycle = "recycle" // the successor of a worker being recycled, started before it stops
)

// exitReason maps the arbiter's reason for a worker's end (hooks.Event's
// Reason of child_exit) to an Exit… value.
func exitReason(reason string) string {
	r := strings.ToLower(reason)
	switch {
	case r == "crashed":
		return ExitCrashed
	case strings.Contains(r, "oom"):
		return ExitOOM
	case strings.HasPrefix(r, "boot timeout"):
		return ExitBootTimeout
	case strings.HasPrefix(r, "timeout"), strings.Contains(r, "watchdog=trigger"):
		return ExitTimeout
	case strings.Contains(r, "memory"):
		return ExitMemory
	case strings.HasPrefix(r, "recycled"):
		return ExitRecycled
	case strings.Contains(r, "autoscal"):
		return ExitAutoscale
	case strings.HasPrefix(r, "replaced by generation"), strings.Contains(r, "reload"):
		return ExitReload
	case strings.Contains(r, "scaled down"), strings.Contains(r, "scale down"):
		return ExitScale
	case strings.Contains(r, "stopping by itself"):
		return ExitExited
	case strings.Contains(r, "stop"), strings.HasPrefix(r, "sig"):
		return ExitStopped
	}
	return ExitOther
}

// reloadResult maps a reload's outcome (workers.Options.Reloaded) to the
// result label of forkd_reloads_total: ok, rejected (the config or the
// on_reload hook refused it), or failed (the new generation did not come
// up and was rolled back).
func reloadResult(err error) string {
	if err == nil {
		return "ok"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "reload rejected") || strings.HasPrefix(msg, "reload aborted") {
		return "rejected"
	}
	return "failed"
}
