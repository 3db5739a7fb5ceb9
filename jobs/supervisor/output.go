package supervisor

import (
	"bufio"
	"os"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/jobs"
)

// output is where a run's stdout and stderr go when the journal is there:
// a pipe whose lines become journal entries with the run's identity
// (FORKD_SCHEDULE, FORKD_RUN_ID, FORKD_SCHEDULED_AT), its syslog
// identifier the schedule's name.
type output struct {
	r, w *os.File
}

// newOutput makes the pipe of run r; nil (the master's own stdout and
// stderr) when the journal is not there or the pipe cannot be made.
func (s *Supervisor) newOutput(id jobs.Run) *output {
	if !s.opts.Journal {
		return nil
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		s.log.Warn("schedule run output: no pipe; it goes to forkd's stderr", "schedule", id.Schedule, "err", err)
		return nil
	}
	o := &output{r: rd, w: wr}
	go o.copy(id)
	return o
}

// adoptOutput resumes reading the pipe a run writes to from its read end
// fd, handed over by an upgrade.
func adoptOutput(fd int, id jobs.Run) *output {
	unix.CloseOnExec(fd)
	o := &output{r: os.NewFile(uintptr(fd), "run-output")}
	go o.copy(id)
	return o
}

// copy writes each line the run writes to the journal, until every
// writer has closed the pipe.
func (o *output) copy(id jobs.Run) {
	defer o.r.Close()
	vars := map[string]string{"SYSLOG_IDENTIFIER": id.Schedule}
	for _, kv := range id.Env() {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				vars[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	sc := bufio.NewScanner(o.r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		_ = sdjournal.Send(sc.Text(), sdjournal.PriInfo, vars)
	}
}

// started closes the master's copy of the write end, once the run has
// its own.
func (o *output) started() {
	if o != nil && o.w != nil {
		o.w.Close()
		o.w = nil
	}
}

// keep makes the read end survive the master's exec (an upgrade) and
// returns its fd; release undoes it when the upgrade did not happen.
func (o *output) keep() int {
	fd := int(o.r.Fd())
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
	return fd
}

func (o *output) release() { unix.CloseOnExec(int(o.r.Fd())) }
