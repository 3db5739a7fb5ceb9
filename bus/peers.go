package bus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/forkd/forkd/internal/actor"
	"github.com/godbus/dbus/v5"
)

// The bounds of the peer-to-peer socket.
const (
	// peerBacklog is how many signals wait for one peer; a peer that falls
	// further behind is disconnected (it learns it missed signals from the
	// closed connection, never silently).
	peerBacklog = 256
	// peerQueue is how many signals wait for the peers' loop; more are
	// not sent to the peers.
	peerQueue = 1024
	// authTimeout bounds a peer's handshake.
	authTimeout = 10 * time.Second
)

// peers serves the object on the peer-to-peer socket: every peer that
// connects and authenticates gets its own godbus connection with the
// object exported on it, and every signal and PropertiesChanged. One
// goroutine, run's, owns the set of peers.
type peers struct {
	b    *Service
	path string
	// l is the socket, listening since newPeers; nil when it could not
	// be created, for the reason listenErr.
	l         *net.UnixListener
	listenErr error
	// madeDir says newPeers created the socket's directory: run removes it
	// with the socket.
	madeDir bool
	// privileged are the uids that may call every method; others may
	// only read, as the D-Bus policy lets them on the system bus.
	privileged map[uint32]bool
	guid       string

	signals       chan pendingWrite  // from Service.enqueue and UpdateStatus
	statusChanged chan struct{}      // capacity 1
	flushes       chan chan struct{} // from flush
	joins         chan *peer
	leaves        chan *peer
	// stopped is closed when run returns.
	stopped chan struct{}
}

// peer is one connected, authenticated peer.
type peer struct {
	id   int
	uid  uint32
	raw  net.Conn
	conn *dbus.Conn
	// out is what its writer sends; run closes it when the peer leaves.
	out chan pendingWrite
	// done is closed once the writer sent everything and closed conn.
	done chan struct{}
}

// newPeers creates the socket at path: peers can connect from then on, and
// are served once run runs.
func newPeers(b *Service, path string) *peers {
	p := &peers{b: b, path: path, privileged: privilegedUIDs(), guid: newGUID(),
		signals: make(chan pendingWrite, peerQueue), statusChanged: make(chan struct{}, 1),
		flushes: make(chan chan struct{}), joins: make(chan *peer), leaves: make(chan *peer), stopped: make(chan struct{})}
	p.l, p.madeDir, p.listenErr = listenSocket(path)
	return p
}

// enqueue hands a signal to run; it never blocks.
func (p *peers) enqueue(s queuedSignal) {
	select {
	case p.signals <- pendingWrite{name: Interface + "." + s.member, body: s.body}:
	default:
	}
}

// flush returns once the signals enqueued before it are written to every
// peer connected now, or once ctx ends or run has returned.
func (p *peers) flush(ctx context.Context) {
	actor.Barrier(ctx, p.flushes, p.stopped)
}

// updated tells run the status changed; it never blocks.
func (p *peers) updated() {
	select {
	case p.statusChanged <- struct{}{}:
	default:
	}
}

// run serves the socket until ctx is done; then it sends the peers what
// is queued (on_exit) for at most drainTimeout, disconnects them and
// removes the socket. When the socket could not be created it logs a
// warning and serves nobody.
func (p *peers) run(ctx context.Context) {
	defer close(p.stopped)
	if l := p.l; p.listenErr != nil {
		p.b.log.Warn("peer-to-peer D-Bus socket not served: forkctl works only over the bus",
			"socket", p.path, "err", p.listenErr)
	} else {
		p.b.log.Debug("serving D-Bus peer to peer", "socket", p.path)
		accepting := make(chan struct{})
		go p.accept(ctx, l, accepting)
		defer func() {
			l.Close() // removes the socket
			<-accepting
			if p.madeDir {
				os.Remove(filepath.Dir(p.path)) // unless something else is in it
			}
		}()
	}
	published := p.b.announced(p.b.status.Load())
	set := map[*peer]bool{}
	next := 0
	fanout := func(w pendingWrite) {
		for pr := range set {
			select {
			case pr.out <- w:
			default:
				p.b.log.Warn("D-Bus peer not reading its signals: disconnected", "peer", pr.id, "uid", pr.uid)
				if w.written != nil {
					w.written() // nothing more is written to it
				}
				delete(set, pr)
				close(pr.out)
				pr.raw.Close()
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			for len(p.signals) > 0 {
				fanout(<-p.signals)
			}
			p.disconnect(set)
			return
		case pr := <-p.joins:
			next++
			pr.id = next
			set[pr] = true
			go func() {
				<-pr.conn.Context().Done()
				select {
				case p.leaves <- pr:
				case <-p.stopped:
				}
			}()
		case pr := <-p.leaves:
			if set[pr] {
				delete(set, pr)
				close(pr.out)
			}
		case w := <-p.signals:
			fanout(w)
		case done := <-p.flushes:
			for n := len(p.signals); n > 0; n-- {
				fanout(<-p.signals)
			}
			var wg sync.WaitGroup
			wg.Add(len(set))
			fanout(pendingWrite{written: wg.Done})
			go func() {
				wg.Wait()
				close(done)
			}()
		case <-p.statusChanged:
			for n := len(p.signals); n > 0; n-- {
				fanout(<-p.signals) // signals emitted before the update go first
			}
			now := p.b.announced(p.b.status.Load())
			if changed := changedProperties(published, now, "State", "Generation", "Workers",
				"ReadyWorkers", "DroppedSignals"); len(changed) > 0 {
				fanout(pendingWrite{name: "org.freedesktop.DBus.Properties.PropertiesChanged",
					body: []any{Interface, changed, []string{}}})
			}
		}
	}
}

// disconnect lets every peer's writer send what it has for at most
// drainTimeout, then closes their connections.
func (p *peers) disconnect(set map[*peer]bool) {
	deadline := time.NewTimer(drainTimeout)
	defer deadline.Stop()
	for pr := range set {
		close(pr.out)
	}
	for pr := range set {
		select {
		case <-pr.done:
		case <-deadline.C:
			for pr := range set {
				pr.raw.Close()
			}
			for pr := range set {
				<-pr.done
			}
			return
		}
	}
}

// accept admits peers until the listener closes; it closes accepting when
// it returns.
func (p *peers) accept(ctx context.Context, l *net.UnixListener, accepting chan<- struct{}) {
	defer close(accepting)
	for {
		c, err := l.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of fds, say: try again shortly rather than spin.
			p.b.log.Warn("D-Bus peer-to-peer socket: accept", "err", err)
			t := time.NewTimer(100 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
			continue
		}
		go p.admit(ctx, c)
	}
}

// admit authenticates the peer on c and hands it to run, or closes c.
func (p *peers) admit(ctx context.Context, c *net.UnixConn) {
	uid, err := peerUID(c)
	if err == nil {
		// A handshake in progress ends when ctx does: c is closed under it.
		stopClosing := context.AfterFunc(ctx, func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(authTimeout))
		in := bufio.NewReader(c)
		err = serverHandshake(in, c, uid, p.guid)
		if stopClosing() && err == nil {
			_ = c.SetDeadline(time.Time{})
			err = p.join(ctx, c, in, uid)
		}
	}
	if err != nil {
		p.b.log.Debug("D-Bus peer refused", "uid", uid, "err", err)
		c.Close()
	}
}

// join wraps the authenticated c (in holding what it sent after BEGIN) in
// a godbus connection that serves the object, and hands it to run.
func (p *peers) join(ctx context.Context, c *net.UnixConn, in *bufio.Reader, uid uint32) error {
	tr := newAuthedTransport(in, c, p.guid)
	// The connection outlives ctx for as long as disconnect drains.
	conn, err := dbus.NewConn(tr, dbus.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return err
	}
	if err := p.b.export(conn, p.privileged[uid]); err != nil {
		conn.Close()
		return fmt.Errorf("export %s: %w", ObjectPath, err)
	}
	if err := exportDriver(conn); err != nil {
		conn.Close()
		return fmt.Errorf("export the bus driver's methods: %w", err)
	}
	// The peer joins before godbus reads its first message: it gets every
	// signal emitted after its first call returns. Its writer starts once
	// Auth is done.
	pr := &peer{uid: uid, raw: c, conn: conn, out: make(chan pendingWrite, peerBacklog), done: make(chan struct{})}
	select {
	case p.joins <- pr:
	case <-p.stopped:
		conn.Close()
		return nil
	case <-ctx.Done():
		conn.Close()
		return nil
	}
	// Auth is godbus's client side; tr answers it (see authedTransport),
	// and it starts godbus's reading of messages.
	err = conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(int(uid)))})
	go pr.write()
	if err != nil {
		conn.Close() // run hears it left
		return fmt.Errorf("start the connection: %w", err)
	}
	return nil
}

// write sends what run hands it until run closes out, then closes the
// connection.
func (pr *peer) write() {
	defer close(pr.done)
	for w := range pr.out {
		if w.written != nil {
			w.written()
			continue
		}
		if err := pr.conn.Emit(ObjectPath, w.name, w.body...); err != nil {
			pr.raw.Close() // broken: the rest fails at once, and run hears it left
		}
	}
	pr.conn.Close()
}

// exportDriver answers the bus driver's methods that clients call on any
// connection — Hello, AddMatch and RemoveMatch — as a peer-to-peer
// connection has no bus: there is no unique name to give and no match to
// record, every signal goes to every peer.
func exportDriver(conn *dbus.Conn) error {
	driver := map[string]any{
		"Hello":       func() (string, *dbus.Error) { return ":p2p.peer", nil },
		"AddMatch":    func(string) *dbus.Error { return nil },
		"RemoveMatch": func(string) *dbus.Error { return nil },
	}
	return conn.ExportMethodTable(driver, "/org/freedesktop/DBus", "org.freedesktop.DBus")
}

// changedProperties returns the properties among names whose value in now
// differs from published (or that published lacks), and records them in
// published.
func changedProperties(published, now map[string]dbus.Variant, names ...string) map[string]dbus.Variant {
	changed := map[string]dbus.Variant{}
	for _, n := range names {
		v, ok := now[n]
		if !ok {
			continue
		}
		if old, seen := published[n]; !seen || old.String() != v.String() {
			changed[n] = v
			published[n] = v
		}
	}
	return changed
}
