// Command forkd is a pre-fork process manager: one master, N workers that
// share the listening sockets, every lifecycle hook a D-Bus signal.
//
//	forkd --config /etc/forkd/myapp.toml
//
// See the README for the config reference, signals and hooks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/internal/master"
)

func init() {
	// The arbiter runs on the main goroutine; pin it to the main thread,
	// the one thread that lives as long as the process and survives an
	// in-place upgrade's execve. Workers' parent-death signal is tied to
	// the thread that forked them.
	runtime.LockOSThread()
}

func main() {
	// The exec-shim runs between fork and the worker's exec: nothing else.
	if len(os.Args) > 1 && os.Args[1] == activation.ShimArg {
		err := activation.Shim(os.Args[2:])
		fmt.Fprintln(os.Stderr, "forkd exec-shim:", err)
		os.Exit(127)
	}
	err := master.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, master.ErrUsage):
		fmt.Fprintln(os.Stderr, "forkd:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "forkd:", err)
		os.Exit(1)
	}
}
