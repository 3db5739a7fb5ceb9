// Command go-start is the Go runtime's start as forkd's master pays it: a
// program that links the packages forkd's master links (package master,
// blank-imported: their init functions run) and does nothing but print
// CLOCK_MONOTONIC, in nanoseconds, first thing in main. Scenario 1 of
// package bench runs it beside each start of forkd and times, by the proc
// connector, exec'd → main: the time no code of forkd's own can save, on
// top of what the 4 workers themselves need.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	_ "github.com/forkd/forkd/internal/master"
)

func main() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		fmt.Fprintln(os.Stderr, "go-start:", err)
		os.Exit(1)
	}
	fmt.Println(ts.Nano())
}
