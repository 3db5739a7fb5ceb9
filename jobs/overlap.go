package jobs

// Overlap is a schedule's policy for a run that comes due while the
// previous one is still running: the `overlap` key.
type Overlap string

const (
	// OverlapSkip drops the run that came due (reported as skipped). The
	// default.
	OverlapSkip Overlap = "skip"
	// OverlapQueue keeps the run that came due and starts it when the one
	// in flight ends; at most one run waits, later ones are skipped.
	OverlapQueue Overlap = "queue"
	// OverlapReplace stops the run in flight (TERM, then KILL after
	// kill_timeout; reported as replaced) and starts the run that came due
	// once the stopped one has exited.
	OverlapReplace Overlap = "replace"
)

// Valid reports whether o is one of the policies.
func (o Overlap) Valid() bool {
	return o == OverlapSkip || o == OverlapQueue || o == OverlapReplace
}

// Action is what to do with a run that has come due; see Decide.
type Action int

const (
	// Start the run now.
	Start Action = iota + 1
	// Skip the run: report it as skipped and do not start it.
	Skip
	// Queue the run: start it when the run in flight ends.
	Queue
	// Replace the run in flight: stop it, and queue this run to start
	// once the stopped one has exited.
	Replace
)

// String returns the action's name in lower case ("start", "skip", …).
func (a Action) String() string {
	switch a {
	case Start:
		return "start"
	case Skip:
		return "skip"
	case Queue:
		return "queue"
	case Replace:
		return "replace"
	}
	return "Action(?)"
}

// Decide returns what to do with a run that has come due under policy,
// given whether a run of the same schedule is in flight and whether one is
// already waiting (queued, or waiting for a replaced run to exit). With
// nothing in flight the run starts. A schedule has at most one run in
// flight and one waiting: a run that comes due while one waits is skipped,
// whatever the policy. An unknown policy counts as OverlapSkip.
//
// Decide also serves RunNow: a run asked for by hand is decided the same
// way.
func Decide(policy Overlap, running, waiting bool) Action {
	switch {
	case !running:
		return Start
	case waiting:
		return Skip
	case policy == OverlapQueue:
		return Queue
	case policy == OverlapReplace:
		return Replace
	}
	return Skip
}
