package forkctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/jobs"
)

// job is one ListJobs entry as bus sends it.
type job = bus.JobEntry

// jobJSON is one element of `forkctl jobs --json`.
type jobJSON struct {
	// Name is the singleton's or schedule's name.
	Name string `json:"name"`
	// Kind is "singleton" or "schedule".
	Kind string `json:"kind"`
	// State is where the job is (see ListJobs in the interface XML).
	State string `json:"state"`
	// PID is the singleton's or the running run's process (0: none).
	PID uint32 `json:"pid"`
	// Timing says when a schedule runs ("" for a singleton).
	Timing string `json:"timing"`
	// LastStart is when the last process or run started (null: never).
	LastStart *time.Time `json:"last_start"`
	// LastResult is how the last run ended, or why the singleton's last
	// process exited ("" if none).
	LastResult string `json:"last_result"`
	// NextDue is when the schedule's next run is due (null: none).
	NextDue *time.Time `json:"next_due"`
	// Starts counts the processes or runs started since forkd started.
	Starts uint64 `json:"starts"`
	// Scope is "instance" or "cluster".
	Scope string `json:"scope"`
	// Holder is, for a cluster job, the forkd that holds the singleton or
	// claimed the schedule's last period ("host/instance"; "" if none or
	// unknown).
	Holder string `json:"holder"`
}

// usecTime returns the time usec microseconds after the Unix epoch, or
// nil for 0.
func usecTime(usec uint64) *time.Time {
	if usec == 0 {
		return nil
	}
	t := time.UnixMicro(int64(usec))
	return &t
}

// fetchJobs calls ListJobs on in.
func fetchJobs(ctx context.Context, in instance) ([]job, error) {
	var list []job
	if err := in.object().CallWithContext(ctx, bus.Interface+".ListJobs", 0).Store(&list); err != nil {
		return nil, err
	}
	return list, nil
}

func listJobs(ctx context.Context, opts options, name string, asJSON bool, stdout io.Writer) error {
	in, err := open(ctx, opts, name)
	if err != nil {
		return err
	}
	defer in.conn.Close()
	list, err := fetchJobs(ctx, in)
	if err != nil {
		return callError("list the jobs of", in, err)
	}
	if asJSON {
		out := make([]jobJSON, 0, len(list))
		for _, j := range list {
			out = append(out, jobJSON{Name: j.Name, Kind: j.Kind, State: j.State, PID: j.PID, Timing: j.Timing,
				LastStart: usecTime(j.LastStartUsec), LastResult: j.LastResult,
				NextDue: usecTime(j.NextDueUsec), Starts: j.Starts, Scope: j.Scope, Holder: j.Holder})
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tSTATE\tPID\tTIMING\tLAST-START\tLAST-RESULT\tNEXT-DUE\tSTARTS\tHOLDER")
	for _, j := range list {
		pid := "-"
		if j.PID != 0 {
			pid = strconv.FormatUint(uint64(j.PID), 10)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", j.Name, j.Kind, j.State, pid, orDash(j.Timing),
			formatUsec(j.LastStartUsec), orDash(j.LastResult), formatUsec(j.NextDueUsec), j.Starts, holderText(j))
	}
	return w.Flush()
}

// holderText is the HOLDER column: "-" for an instance job, "?" for a
// cluster job whose holder is not known (none, or etcd unreachable).
func holderText(j job) string {
	switch {
	case j.Scope != "cluster":
		return "-"
	case j.Holder == "":
		return "?"
	}
	return j.Holder
}

// formatUsec formats a time in microseconds since the epoch as a local
// date and time, "-" for 0.
func formatUsec(usec uint64) string {
	if usec == 0 {
		return "-"
	}
	return time.UnixMicro(int64(usec)).Format(time.DateTime)
}

// findJob returns the entry of list called name.
func findJob(list []job, name string) (job, bool) {
	for _, j := range list {
		if j.Name == name {
			return j, true
		}
	}
	return job{}, false
}

// runNow calls RunNow and says what came of it, from the job's entry
// before and after the call.
func runNow(ctx context.Context, opts options, jobName, name string, stdout io.Writer) error {
	in, err := open(ctx, opts, name)
	if err != nil {
		return err
	}
	defer in.conn.Close()
	before, _ := fetchJobs(ctx, in) // only to tell what the call did
	if err := in.object().CallWithContext(ctx, bus.Interface+".RunNow", 0, jobName).Err; err != nil {
		return callError("run "+jobName+" of", in, err)
	}
	after, err := fetchJobs(ctx, in)
	j, found := findJob(after, jobName)
	if err != nil || !found {
		_, err := fmt.Fprintf(stdout, "%s: %s: asked to run now\n", in.name, jobName)
		return err
	}
	var starts uint64
	if b, ok := findJob(before, jobName); ok {
		starts = b.Starts
	}
	pid := ""
	if j.PID != 0 {
		pid = fmt.Sprintf(", pid %d", j.PID)
	}
	var what string
	switch {
	case j.Starts > starts && j.Kind == jobs.KindSingleton:
		what = "restarted" + pid
	case j.Starts > starts:
		what = "run started" + pid
	case j.State == "queued":
		what = "a run is queued behind the one running" + pid
	default:
		what = fmt.Sprintf("asked to run now; nothing new started (%s%s)", j.State, pid)
	}
	_, err = fmt.Fprintf(stdout, "%s: %s %s: %s\n", in.name, j.Kind, jobName, what)
	return err
}

// jobCounts summarizes in's jobs for status: a line for the singletons and
// one for the schedules, each only when there are some. A forkd without
// ListJobs (an older one), or a policy that does not let the caller list
// jobs, gives no lines.
func jobCounts(ctx context.Context, in instance) ([][2]string, error) {
	list, err := fetchJobs(ctx, in)
	var de dbus.Error
	if errors.As(err, &de) && (de.Name == "org.freedesktop.DBus.Error.UnknownMethod" ||
		de.Name == "org.freedesktop.DBus.Error.AccessDenied") {
		return nil, nil
	}
	if err != nil {
		return nil, callError("list the jobs of", in, err)
	}
	var singletons, singletonsUp, schedules, running int
	var next uint64
	for _, j := range list {
		switch j.Kind {
		case jobs.KindSingleton:
			singletons++
			if j.State == "running" {
				singletonsUp++
			}
		case jobs.KindSchedule:
			schedules++
			if j.State == "running" || j.State == "queued" {
				running++
			}
			if j.NextDueUsec != 0 && (next == 0 || j.NextDueUsec < next) {
				next = j.NextDueUsec
			}
		}
	}
	var lines [][2]string
	if singletons > 0 {
		lines = append(lines, [2]string{"Singletons", fmt.Sprintf("%d/%d running", singletonsUp, singletons)})
	}
	if schedules > 0 {
		parts := []string{strconv.Itoa(schedules), fmt.Sprintf("%d running", running)}
		if next != 0 {
			parts = append(parts, "next due "+formatUsec(next))
		}
		lines = append(lines, [2]string{"Schedules", strings.Join(parts, ", ")})
	}
	return lines, nil
}
