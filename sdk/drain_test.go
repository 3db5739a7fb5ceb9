package sdk

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
	"github.com/forkd/forkd/sdk/httpdrain"
)

// drainCase is the SDK's worker (helperMain) for the drain scenarios every
// worker implementation must pass.
var drainCase = testkit.DrainCase{
	Start: func(t testing.TB, ln *net.TCPListener) *testkit.Worker {
		t.Helper()
		return startOn(t, ln, nil, "-graceful-timeout", "10s").Worker
	},
	Hello: func(body string) error {
		if body != "hello\n" {
			return fmt.Errorf("body %q, want %q", body, "hello\n")
		}
		return nil
	},
}

func TestServer_DrainSharedSocket(t *testing.T) { testkit.DrainSharedSocket(t, drainCase) }

func TestServer_DrainAnswersAcceptedConnection(t *testing.T) {
	testkit.DrainAnswersAcceptedConnection(t, drainCase)
}

// TestServer_DrainSilentConnection stops a worker holding a connection
// whose client never sends a request (a browser's speculative one): it
// waits for it for httpdrain.NewConnPatience, not for the whole graceful timeout, and
// closes it unanswered.
func TestServer_DrainSilentConnection(t *testing.T) {
	const gracefulTimeout = 20 * time.Second
	h := startHelper(t, nil, "-graceful-timeout", gracefulTimeout.String())
	h.Notify.Wait("READY=1")
	c := drainCase.AcceptedConn(t, h.Worker, "")
	sent := time.Now()
	h.Signal(syscall.SIGTERM)
	h.WaitExit(0)
	if took := time.Since(sent); took > httpdrain.NewConnPatience+gracefulTimeout/4 {
		t.Errorf("exited %v after SIGTERM; a silent connection should hold it about %v, not the %v graceful timeout",
			took, httpdrain.NewConnPatience, gracefulTimeout)
	}
	if n, err := c.Read(make([]byte, 1)); n > 0 || err == nil {
		t.Errorf("silent connection read %d bytes, %v; want it closed unanswered", n, err)
	}
}

func TestServer_DrainAnswersIdleKeepAlive(t *testing.T) {
	testkit.DrainAnswersIdleKeepAlive(t, drainCase)
}
