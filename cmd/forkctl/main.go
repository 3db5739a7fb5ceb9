// Command forkctl controls forkd instances over D-Bus and checks configs;
// see package forkctl for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/forkd/forkd/internal/forkctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := forkctl.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "forkctl:", err)
	if errors.Is(err, forkctl.ErrUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}
