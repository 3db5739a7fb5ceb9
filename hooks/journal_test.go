package hooks

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkd/forkd/internal/testkit"
)

// journalName is what journald accepts as a field name.
var journalName = regexp.MustCompile(`^[A-Z0-9][A-Z0-9_]{0,63}$`)

// parseJournalEntry decodes a native journal protocol entry, as journald
// does: NAME=value lines, or NAME, a newline, a little-endian uint64 length,
// the value and a newline.
func parseJournalEntry(data []byte) (map[string]string, error) {
	fields := make(map[string]string)
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("unterminated line %q", data)
		}
		line := data[:nl]
		data = data[nl+1:]
		name, value, simple := bytes.Cut(line, []byte("="))
		if !simple {
			if len(data) < 8 {
				return nil, fmt.Errorf("field %s: short length", line)
			}
			n := binary.LittleEndian.Uint64(data)
			data = data[8:]
			if uint64(len(data)) < n+1 || data[n] != '\n' {
				return nil, fmt.Errorf("field %s: %d bytes announced, value not followed by a newline", line, n)
			}
			value = data[:n]
			data = data[n+1:]
		}
		if !journalName.Match(name) {
			return nil, fmt.Errorf("field name %q is not one journald accepts", name)
		}
		if _, dup := fields[string(name)]; dup {
			return nil, fmt.Errorf("field %s twice", name)
		}
		fields[string(name)] = string(value)
	}
	return fields, nil
}

// listenJournal stands up a datagram socket in a temporary folder, playing
// journald (testkit.Notify, read from only once the test takes an entry).
func listenJournal(t *testing.T) (*testkit.Notify, string) {
	t.Helper()
	j := testkit.ListenNotifyAt(t, filepath.Join(t.TempDir(), "journal.socket"))
	return j, j.Path
}

// receiveJournalEntry reads one entry from the fake journald, whether sent
// inline or in a memfd, and reports whether it came in a memfd.
func receiveJournalEntry(t *testing.T, journald *testkit.Notify) (fields map[string]string, viaMemfd bool) {
	t.Helper()
	n := journald.Next()
	data := []byte(n.Text)
	if len(n.FDs) > 0 {
		if len(data) != 0 {
			t.Errorf("a datagram carrying a memfd has %d bytes of data, want none", len(data))
		}
		if len(n.FDs) != 1 {
			t.Fatalf("a datagram carries %d fds, want one memfd", len(n.FDs))
		}
		data = readMemfd(t, n.FDs[0])
		viaMemfd = true
	}
	fields, err := parseJournalEntry(data)
	if err != nil {
		t.Fatalf("parse journal entry %q: %v", data, err)
	}
	return fields, viaMemfd
}

// readMemfd returns the contents of the memfd fd (which stays open),
// checking it is sealed as journald requires.
func readMemfd(t *testing.T, fd int) []byte {
	t.Helper()
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "journal-memfd")
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatalf("F_GET_SEALS: %v", err)
	}
	if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE; seals&want != want {
		t.Errorf("memfd seals = %#x, want at least %#x", seals, want)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestJournalEntry_Format(t *testing.T) {
	e := Event{Hook: WorkerExit, Instance: "myapp", Generation: 3, WorkerID: 2, PID: 1234, ExitCode: 1, Reason: "crashed"}
	fields, err := parseJournalEntry(journalEntry(e))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"MESSAGE":           "hook worker_exit: worker 2 pid 1234 exited 1 (crashed)",
		"MESSAGE_ID":        JournalMessageID(WorkerExit),
		"PRIORITY":          "6",
		"SYSLOG_IDENTIFIER": "forkd",
		"FORKD_HOOK":        "worker_exit",
		"FORKD_INSTANCE":    "myapp",
		"FORKD_GENERATION":  "3",
		"FORKD_WORKER_ID":   "2",
		"FORKD_PID":         "1234",
		"FORKD_EXIT_CODE":   "1",
		"FORKD_SIGNAL":      "0",
		"FORKD_REASON":      "crashed",
	}
	for k, v := range want {
		if fields[k] != v {
			t.Errorf("%s = %q, want %q", k, fields[k], v)
		}
	}
	if len(fields) != len(want) {
		t.Errorf("entry has fields %v, want exactly %v", fields, want)
	}

	t.Run("job", func(t *testing.T) {
		due := time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)
		fields, err := parseJournalEntry(journalEntry(Event{Hook: ScheduleStarted, Instance: "myapp", Generation: 1,
			WorkerID: -1, Job: "cleanup", RunID: "0192f-run", ScheduledAt: due, PID: 42}))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"FORKD_HOOK": "schedule_started", "FORKD_JOB": "cleanup", "FORKD_RUN_ID": "0192f-run",
			"FORKD_SCHEDULED_AT": "2026-01-02T03:05:00Z", "FORKD_PID": "42", "FORKD_INSTANCE": "myapp",
			"FORKD_GENERATION": "1", "MESSAGE_ID": JournalMessageID(ScheduleStarted), "PRIORITY": "6",
			"SYSLOG_IDENTIFIER": "forkd",
			"MESSAGE":           "hook schedule_started: schedule cleanup run 0192f-run pid 42 started, due 2026-01-02T03:05:00Z"}
		if !reflect.DeepEqual(fields, want) {
			t.Errorf("schedule_started entry\n got %v\nwant %v", fields, want)
		}
		fields, err = parseJournalEntry(journalEntry(Event{Hook: ScheduleFinished, WorkerID: -1, Job: "cleanup",
			RunID: "0192f-run", ExitCode: 1, Duration: 2 * time.Second, Result: "failed"}))
		if err != nil {
			t.Fatal(err)
		}
		if fields["PRIORITY"] != "4" || fields["FORKD_RESULT"] != "failed" || fields["FORKD_DURATION_USEC"] != "2000000" {
			t.Errorf("failed run's entry %v, want PRIORITY 4, FORKD_RESULT failed, FORKD_DURATION_USEC 2000000", fields)
		}
	})

	t.Run("priority", func(t *testing.T) {
		for hook, want := range map[Hook]string{PreFork: "7", PostFork: "7", WorkerAbort: "4", OnStarting: "6"} {
			fields, err := parseJournalEntry(journalEntry(Event{Hook: hook}))
			if err != nil {
				t.Fatal(err)
			}
			if fields["PRIORITY"] != want {
				t.Errorf("%s: PRIORITY = %s, want %s", hook, fields["PRIORITY"], want)
			}
		}
	})

	t.Run("newline", func(t *testing.T) {
		reason := "config error:\nline 3: unknown key"
		entry := journalEntry(Event{Hook: OnReload, Instance: "myapp", Reason: reason})
		if !bytes.Contains(entry, []byte("FORKD_REASON\n")) {
			t.Errorf("a value with a newline is not in the binary form: %q", entry)
		}
		fields, err := parseJournalEntry(entry)
		if err != nil {
			t.Fatal(err)
		}
		if fields["FORKD_REASON"] != reason {
			t.Errorf("FORKD_REASON = %q, want %q", fields["FORKD_REASON"], reason)
		}
		if !strings.HasSuffix(fields["MESSAGE"], "("+reason+")") {
			t.Errorf("MESSAGE = %q, want the reason at its end", fields["MESSAGE"])
		}
		if _, ok := fields["FORKD_WORKER_ID"]; ok {
			t.Errorf("on_reload entry has FORKD_WORKER_ID")
		}
	})
}

func TestJournalMessageID(t *testing.T) {
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := make(map[string]Hook)
	for _, h := range All {
		id := JournalMessageID(h)
		if !hex32.MatchString(id) {
			t.Errorf("JournalMessageID(%s) = %q, want 32 hex digits", h, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share MESSAGE_ID %s", h, other, id)
		}
		seen[id] = h
	}
	// Pinned: users' journalctl queries and catalogs depend on it.
	if got, want := JournalMessageID(OnStarting), "1076e56597bedf70a34ee6da871876c3"; got != want {
		t.Errorf("JournalMessageID(on_starting) = %s, want %s: the IDs must not change", got, want)
	}
}

func TestJournal_Delivery(t *testing.T) {
	conn, path := listenJournal(t)
	j := newJournal(nil, path, 16)
	stop := testkit.Run(t, j.Run)

	t.Run("inline", func(t *testing.T) {
		j.Emit(Event{Hook: WorkerAbort, Instance: "myapp", Generation: 2, WorkerID: 1, PID: 4321, Signal: 6, Reason: "timeout\nafter 30s"})
		fields, viaMemfd := receiveJournalEntry(t, conn)
		if viaMemfd {
			t.Errorf("a small entry came in a memfd")
		}
		want := map[string]string{
			"MESSAGE":         "hook worker_abort: worker 1 pid 4321 aborted with SIGABRT (timeout\nafter 30s)",
			"PRIORITY":        "4",
			"MESSAGE_ID":      JournalMessageID(WorkerAbort),
			"FORKD_HOOK":      "worker_abort",
			"FORKD_WORKER_ID": "1",
			"FORKD_PID":       "4321",
			"FORKD_SIGNAL":    "6",
			"FORKD_REASON":    "timeout\nafter 30s",
		}
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("%s = %q, want %q", k, fields[k], v)
			}
		}
	})

	t.Run("memfd", func(t *testing.T) {
		// Bigger than any datagram the socket may send: it must go in a memfd.
		size := 1 << 20
		if b, err := os.ReadFile("/proc/sys/net/core/wmem_default"); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n+(64<<10) > size {
				size = n + 64<<10
			}
		}
		reason := strings.Repeat("x", size)
		j.Emit(Event{Hook: OnExit, Instance: "myapp", Reason: reason})
		fields, viaMemfd := receiveJournalEntry(t, conn)
		if !viaMemfd {
			t.Errorf("a %d-byte entry did not come in a memfd", size)
		}
		if fields["FORKD_REASON"] != reason || fields["FORKD_HOOK"] != "on_exit" {
			t.Errorf("entry from memfd: FORKD_HOOK = %q, FORKD_REASON of %d bytes; want on_exit, %d bytes",
				fields["FORKD_HOOK"], len(fields["FORKD_REASON"]), size)
		}
	})

	stop()
	if j.Dropped() != 0 || j.Failed() != 0 {
		t.Errorf("Dropped() = %d, Failed() = %d; want 0, 0", j.Dropped(), j.Failed())
	}
}

func TestJournal_DrainsOnCancel(t *testing.T) {
	conn, path := listenJournal(t)
	j := newJournal(nil, path, 8)
	for i := range 3 {
		j.Emit(Event{Hook: WorkerExit, WorkerID: i})
	}
	j.Emit(Event{Hook: OnExit, Reason: "SIGTERM"})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := j.Run(ctx); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	for i := range 3 {
		fields, _ := receiveJournalEntry(t, conn)
		if fields["FORKD_HOOK"] != "worker_exit" || fields["FORKD_WORKER_ID"] != strconv.Itoa(i) {
			t.Fatalf("entry %d: %v, want worker_exit of worker %d", i, fields, i)
		}
	}
	if fields, _ := receiveJournalEntry(t, conn); fields["FORKD_HOOK"] != "on_exit" {
		t.Fatalf("last entry: %v, want on_exit", fields)
	}
}

func TestJournal_EmitDrops(t *testing.T) {
	j := newJournal(nil, filepath.Join(t.TempDir(), "journal.socket"), 4)
	emitted := make(chan struct{})
	go func() {
		defer close(emitted)
		for i := range 10 {
			j.Emit(Event{Hook: PostFork, WorkerID: i})
		}
	}()
	select {
	case <-emitted:
	case <-time.After(testDeadline):
		t.Fatalf("Emit blocked on a full queue")
	}
	if got := j.Dropped(); got != 6 {
		t.Errorf("Dropped() = %d, want 6", got)
	}
}

func TestJournal_Failure(t *testing.T) {
	log := newRecordLog()
	path := filepath.Join(t.TempDir(), "journal.socket")
	j := newJournal(log.logger(), path, 4)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// No journald: entries fail, are counted, and the first failure of a run
	// of them is logged.
	for range 3 {
		j.deliver(conn, Event{Hook: OnStarting}, time.Now().Add(time.Second))
	}
	if got := j.Failed(); got != 3 {
		t.Errorf("Failed() = %d, want 3", got)
	}
	warnings := 0
	for _, rec := range log.all(t) {
		if rec["level"] == "WARN" {
			warnings++
			if !strings.Contains(fmt.Sprint(rec["err"]), path) {
				t.Errorf("warning %v does not name the socket", rec)
			}
		}
	}
	if warnings != 1 {
		t.Errorf("logged %d warnings for a run of 3 failures, want 1; log:\n%s", warnings, log.String())
	}

	// journald comes (back): the next entry gets through.
	journald := testkit.ListenNotifyAt(t, path)
	j.deliver(conn, Event{Hook: WhenReady, Workers: 2}, time.Now().Add(time.Second))
	if fields, _ := receiveJournalEntry(t, journald); fields["FORKD_HOOK"] != "when_ready" || fields["FORKD_WORKERS"] != "2" {
		t.Errorf("entry after recovery: %v", fields)
	}
	if got := j.Failed(); got != 3 {
		t.Errorf("Failed() = %d after a success, want still 3", got)
	}
	if !strings.Contains(log.String(), "again") {
		t.Errorf("recovery not logged; log:\n%s", log.String())
	}
}

func TestJournal_WriteTimeout(t *testing.T) {
	// A journald that reads nothing: once its queue is full, a write waits
	// for the deadline and fails rather than blocking for ever.
	_, path := listenJournal(t)
	j := newJournal(nil, path, 4)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	entry := journalEntry(Event{Hook: PostRequest, Reason: strings.Repeat("r", 4096)})
	for i := 0; ; i++ {
		if i > 100000 {
			t.Fatalf("%d entries written to a socket nobody reads", i)
		}
		err := j.write(conn, entry, time.Now().Add(200*time.Millisecond))
		if err == nil {
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write %d to a full socket: %v, want a deadline error", i, err)
		}
		break
	}
}

func TestJournalEnabled(t *testing.T) {
	if _, err := os.Stat(journalSocket); err != nil {
		if JournalEnabled() {
			t.Errorf("JournalEnabled() = true without %s", journalSocket)
		}
		t.Skipf("no journald here (%v): nothing to deliver to", err)
	}
	t.Logf("JournalEnabled() = %v with %s present", JournalEnabled(), journalSocket)
}

// TestJournal_Flush: once Flush returns, every event emitted before it is
// in the journal's socket, and Run goes on delivering. Each round fits the
// socket's queue (net.unix.max_dgram_qlen, 10 by default), as the test
// reads only after Flush.
func TestJournal_Flush(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.socket")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// queued counts the datagrams waiting in the socket, taking them.
	queued := func() int {
		n := 0
		buf := make([]byte, 64<<10)
		for {
			if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
				return n
			}
			n++
		}
	}

	j := newJournal(nil, path, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for round := range 5 {
		const n = 8
		for i := range n {
			j.Emit(Event{Hook: PostFork, WorkerID: i})
		}
		fctx, fcancel := context.WithTimeout(context.Background(), testDeadline)
		j.Flush(fctx)
		expired := fctx.Err() != nil
		fcancel()
		if expired {
			t.Fatalf("round %d: Flush waited until its deadline", round)
		}
		if got := queued(); got != n {
			t.Fatalf("round %d: %d of %d entries in the journal's socket when Flush returned", round, got, n)
		}
	}
	if j.Dropped() != 0 || j.Failed() != 0 {
		t.Errorf("Dropped() = %d, Failed() = %d; want 0, 0", j.Dropped(), j.Failed())
	}
}
