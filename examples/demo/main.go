// Command forkd-demo is a small HTTP worker written only against systemd's
// own protocols — socket activation (LISTEN_FDS) and sd_notify(3) — with
// nothing forkd-specific in it. It shows that a program that already works
// socket-activated under systemd works under forkd unchanged. Its graceful
// drain is package sdk/httpdrain, plain net/http that any socket-activated
// server can use.
//
// It serves HTTP on every socket it inherits:
//
//	GET /             hello from worker <FORKD_WORKER_ID> (pid <pid>, generation <FORKD_GENERATION>)
//	GET /sleep?d=2s   the same answer, after the given time (an in-flight request to watch drain)
//
// ("-" stands for an unset FORKD_WORKER_ID or FORKD_GENERATION.) Once it
// serves it sends READY=1 (with a STATUS= line naming its addresses) to
// NOTIFY_SOCKET; when WATCHDOG_USEC is set it sends WATCHDOG=1 every half of
// it. Signals have Gunicorn's meanings: TERM drains in-flight requests
// (bounded by -graceful-timeout) and exits 0; INT and QUIT exit at once
// with 0; USR1 is where logs would be reopened.
//
// Started without LISTEN_FDS it binds -addr itself, so it can be tried alone:
//
//	go build -o bin/forkd-demo ./examples/demo
//	bin/forkd-demo -addr 127.0.0.1:8080 &
//	curl http://127.0.0.1:8080/
//
// or socket-activated, as systemd or forkd would start it:
//
//	systemd-socket-activate -l 127.0.0.1:8000 -E FORKD_WORKER_ID=0 bin/forkd-demo
//
// Flags:
//
//	-addr 127.0.0.1:8080   address to listen on when no socket is inherited
//	-boot-delay 0          wait this long before serving and READY=1 (a slow boot)
//	-exit-after 0          crash (exit 1) after this long (crash loops); 0 = never
//	-graceful-timeout 30s  longest drain after SIGTERM before closing connections
//
// It logs to stderr with log/slog; every line carries worker_id and pid.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "forkd-demo:", err)
		os.Exit(1)
	}
}
