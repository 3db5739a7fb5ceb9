package hooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	sdjournal "github.com/coreos/go-systemd/v22/journal"
	"github.com/forkd/forkd/internal/actor"
	"golang.org/x/sys/unix"
)

// journalSocket is where systemd-journald reads native protocol datagrams.
const journalSocket = "/run/systemd/journal/socket"

// journalQueueLen is how many events Journal.Emit queues before it drops.
const journalQueueLen = 256

// journalWriteTimeout bounds how long one entry may wait for journald to
// take it (a datagram socket blocks while journald's queue is full).
const journalWriteTimeout = time.Second

// JournalEnabled reports whether the systemd journal is there to write to,
// as when forkd runs as a systemd service.
func JournalEnabled() bool {
	return sdjournal.Enabled()
}

// JournalMessageID returns the journal MESSAGE_ID of hook h's entries: 32
// hex digits derived from the hook's name, the same in every forkd release,
// so `journalctl MESSAGE_ID=…` finds one hook's entries.
func JournalMessageID(h Hook) string {
	sum := sha256.Sum256([]byte("io.github.forkd.hook." + string(h)))
	return hex.EncodeToString(sum[:16])
}

// Journal is the Sink that writes one structured systemd journal entry per
// event, in journald's native protocol:
//
//	MESSAGE=hook worker_exit: worker 2 pid 1234 exited 1 (crashed)
//	MESSAGE_ID=<JournalMessageID(hook)>
//	PRIORITY=6
//	SYSLOG_IDENTIFIER=forkd
//	FORKD_HOOK=worker_exit
//	FORKD_INSTANCE=myapp
//	FORKD_GENERATION=3
//	FORKD_WORKER_ID=2
//	FORKD_PID=1234
//	FORKD_EXIT_CODE=1
//	FORKD_SIGNAL=0
//	FORKD_REASON=crashed
//
// The FORKD_* fields are those of the exec hooks' environment (see Exec),
// less empty ones; PRIORITY is debug (7) for pre_fork and post_fork, warning
// (4) for worker_abort and for a schedule's run that failed or timed out,
// and info (6) otherwise. So
//
//	journalctl -t forkd FORKD_INSTANCE=myapp FORKD_HOOK=worker_exit
//
// lists one instance's worker exits, and
//
//	journalctl -t forkd FORKD_INSTANCE=myapp FORKD_JOB=cleanup
//
// the starts and ends of its singleton or schedule called cleanup.
//
// Emit never blocks: events queue for Run, which writes them one at a time;
// an event that finds the queue full is dropped and counted. Use it when
// JournalEnabled reports true.
type Journal struct {
	queue        chan Event
	flushes      chan chan struct{} // Flush's requests to Run
	dropped      atomic.Uint64
	failed       atomic.Uint64
	failing      atomic.Bool
	logger       *slog.Logger
	socket       string
	writeTimeout time.Duration
}

// NewJournal returns a Journal that logs failures to write to the journal to
// logger (nil: nowhere), once per run of failures.
func NewJournal(logger *slog.Logger) *Journal {
	return newJournal(logger, journalSocket, journalQueueLen)
}

// newJournal is NewJournal writing to socket with a queue of queueLen events.
func newJournal(logger *slog.Logger, socket string, queueLen int) *Journal {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Journal{
		queue:        make(chan Event, queueLen),
		flushes:      make(chan chan struct{}),
		logger:       logger,
		socket:       socket,
		writeTimeout: journalWriteTimeout,
	}
}

// Emit queues e for Run and returns at once; an event that finds the queue
// full is dropped and counted (see Dropped).
func (j *Journal) Emit(e Event) {
	select {
	case j.queue <- e:
	default:
		j.dropped.Add(1)
	}
}

// Flush returns once the events emitted before it are written to the
// journal (or failed to be), or once ctx ends, whichever comes first.
func (j *Journal) Flush(ctx context.Context) {
	actor.Barrier(ctx, j.flushes, nil)
}

// Dropped returns how many events Emit dropped because its queue was full.
func (j *Journal) Dropped() uint64 {
	return j.dropped.Load()
}

// Failed returns how many entries the journal did not take (no journald,
// or journald too slow to take one within a second).
func (j *Journal) Failed() uint64 {
	return j.failed.Load()
}

// Run writes queued events to the journal until ctx is done, then writes
// what is still queued (for a second at most) and returns nil. It returns an
// error only when it cannot open a socket to write from.
func (j *Journal) Run(ctx context.Context) error {
	// Unbound and unconnected, like sd_journal_send's: each entry is sent to
	// the journal's address, so a restarted journald is found again.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("hooks: open journal socket: %w", err)
	}
	defer conn.Close()
	for {
		select {
		case <-ctx.Done():
			deadline := time.Now().Add(j.writeTimeout)
			for {
				select {
				case e := <-j.queue:
					j.deliver(conn, e, deadline)
				default:
					return nil
				}
			}
		case e := <-j.queue:
			j.deliver(conn, e, time.Now().Add(j.writeTimeout))
		case done := <-j.flushes:
			for n := len(j.queue); n > 0; n-- {
				j.deliver(conn, <-j.queue, time.Now().Add(j.writeTimeout))
			}
			close(done)
		}
	}
}

// deliver writes e's entry, counting and logging a failure.
func (j *Journal) deliver(conn *net.UnixConn, e Event, deadline time.Time) {
	err := j.write(conn, journalEntry(e), deadline)
	if err != nil {
		j.failed.Add(1)
		if !j.failing.Swap(true) {
			j.logger.Warn("cannot write hook events to the journal", "socket", j.socket, "err", err)
		}
		return
	}
	if j.failing.Swap(false) {
		j.logger.Info("writing hook events to the journal again", "socket", j.socket, "failed", j.failed.Load())
	}
}

// write sends one native protocol entry to the journal: as a datagram, or,
// when it is too big for one, in a sealed memfd passed along an empty
// datagram, as journald expects.
func (j *Journal) write(conn *net.UnixConn, entry []byte, deadline time.Time) error {
	addr := &net.UnixAddr{Name: j.socket, Net: "unixgram"}
	if err := conn.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("hooks: write journal entry: %w", err)
	}
	_, _, err := conn.WriteMsgUnix(entry, nil, addr)
	if err == nil {
		return nil
	}
	if !errors.Is(err, syscall.EMSGSIZE) && !errors.Is(err, syscall.ENOBUFS) {
		return fmt.Errorf("hooks: write journal entry to %s: %w", j.socket, err)
	}
	f, err := sealedMemfd(entry)
	if err != nil {
		return fmt.Errorf("hooks: write large journal entry (%d bytes): %w", len(entry), err)
	}
	defer f.Close()
	if _, _, err := conn.WriteMsgUnix(nil, unix.UnixRights(int(f.Fd())), addr); err != nil {
		return fmt.Errorf("hooks: write large journal entry (%d bytes) to %s: %w", len(entry), j.socket, err)
	}
	return nil
}

// sealedMemfd returns a memfd holding data, sealed against any change.
func sealedMemfd(data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("forkd-journal", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "forkd-journal")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("fill memfd: %w", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	return f, nil
}

// journalPriority maps a slog level to a syslog priority.
func journalPriority(l slog.Level) sdjournal.Priority {
	switch {
	case l < slog.LevelInfo:
		return sdjournal.PriDebug
	case l < slog.LevelWarn:
		return sdjournal.PriInfo
	case l < slog.LevelError:
		return sdjournal.PriWarning
	}
	return sdjournal.PriErr
}

// journalEntry formats e as a native journal protocol entry (see Journal).
func journalEntry(e Event) []byte {
	var b bytes.Buffer
	appendJournalField(&b, "MESSAGE", eventMessage(e))
	appendJournalField(&b, "MESSAGE_ID", JournalMessageID(e.Hook))
	appendJournalField(&b, "PRIORITY", strconv.Itoa(int(journalPriority(eventLevel(e)))))
	appendJournalField(&b, "SYSLOG_IDENTIFIER", "forkd")
	for _, a := range eventAttrs(e) {
		v := attrString(a.Value)
		if v == "" {
			continue
		}
		appendJournalField(&b, envName(a.Key), v)
	}
	return b.Bytes()
}

// appendJournalField appends one field in the native protocol: NAME=value
// and a newline, or, for a value holding a newline, NAME, a newline, the
// value's length as a little-endian uint64, the value and a newline.
func appendJournalField(b *bytes.Buffer, name, value string) {
	if !strings.Contains(value, "\n") {
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(value)
		b.WriteByte('\n')
		return
	}
	b.WriteString(name)
	b.WriteByte('\n')
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(value)))
	b.Write(n[:])
	b.WriteString(value)
	b.WriteByte('\n')
}
