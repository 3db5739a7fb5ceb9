package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/forkd/forkd/internal/testkit"
)

// drainCase is the demo worker, on plain go-systemd, for the drain
// scenarios every worker implementation must pass (the SDK's Server runs
// the same ones).
var drainCase = testkit.DrainCase{
	Start: func(t testing.TB, ln *net.TCPListener) *testkit.Worker {
		t.Helper()
		return startDemoOn(t, ln, nil, "-graceful-timeout", "10s").Worker
	},
	Hello: func(body string) error {
		if !strings.HasPrefix(body, "hello from worker ") {
			return fmt.Errorf("body %q, want the demo's hello", body)
		}
		return nil
	},
}

func TestDemo_DrainSharedSocket(t *testing.T) { testkit.DrainSharedSocket(t, drainCase) }

func TestDemo_DrainAnswersAcceptedConnection(t *testing.T) {
	testkit.DrainAnswersAcceptedConnection(t, drainCase)
}

func TestDemo_DrainAnswersIdleKeepAlive(t *testing.T) {
	testkit.DrainAnswersIdleKeepAlive(t, drainCase)
}
