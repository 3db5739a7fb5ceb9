package bus

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/forkd/forkd/hooks"
	"github.com/forkd/forkd/internal/testkit"
)

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{"flush-exit": flushAndExit})
}

// flushAndExit is a process that serves a Service on the bus at args[0]
// and the socket args[1] and, once told "go" on its standard input and
// connected, emits args[2] WorkerExit signals, flushes and exits at once,
// as a master that re-executes itself does.
func flushAndExit(args []string) int {
	n, err := strconv.Atoi(args[2])
	if err != nil {
		return 2
	}
	b := New(Options{Instance: "flush", Address: args[0], Socket: args[1], Logger: slog.New(slog.DiscardHandler)})
	go b.Run(context.Background())
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 2
	}
	for deadline := time.Now().Add(busTestTimeout); !b.connected.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return 3
		}
	}
	for i := range n {
		b.Emit(hooks.Event{Hook: hooks.WorkerExit, Generation: 1, WorkerID: i, PID: 100 + i})
	}
	ctx, cancel := context.WithTimeout(context.Background(), busTestTimeout)
	defer cancel()
	b.Flush(ctx)
	if ctx.Err() != nil {
		return 4
	}
	return 0
}

// TestService_Flush: the signals emitted before Flush reach a client on
// the bus and a peer even when the process exits right after it returns.
func TestService_Flush(t *testing.T) {
	const n = 200
	dir := busTestDir(t)
	d := startBusTestDaemon(t, dir)
	client := dialBusTest(t, d.Address)
	client.subscribe(t)
	socket := filepath.Join(dir, "flush", SocketName)
	cmd := testkit.Command(t, "flush-exit", d.Address, socket, strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	client.waitOwned(t, Name("flush")) // the socket exists too by now
	peer := dialPeerTest(t, socket)
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the process that flushes: %v", err)
	}
	for i := range n {
		s := client.next(t, Interface+".WorkerExit")
		if len(s.Body) < 3 || s.Body[2] != int32(i) {
			t.Fatalf("bus: WorkerExit %d: %v", i, s.Body)
		}
	}
	for i := range n {
		s := peer.next(t, Interface+".WorkerExit")
		if len(s.Body) < 3 || s.Body[2] != int32(i) {
			t.Fatalf("peer: WorkerExit %d: %v", i, s.Body)
		}
	}
}
