package systemd_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/forkd/forkd/systemd"
)

// A Type=notify service tells systemd when it serves. Here a datagram
// socket stands in for systemd's notify socket.
func ExampleNotifier() {
	dir, err := os.MkdirTemp("", "notify")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	addr := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	old, had := os.LookupEnv("NOTIFY_SOCKET")
	os.Setenv("NOTIFY_SOCKET", addr) // what systemd does for the service
	defer func() {
		if had {
			os.Setenv("NOTIFY_SOCKET", old)
		} else {
			os.Unsetenv("NOTIFY_SOCKET")
		}
	}()

	n := systemd.NewNotifier()
	if err := n.Ready("4/4 workers ready, generation 1"); err != nil {
		panic(err)
	}

	buf := make([]byte, 256)
	k, err := conn.Read(buf)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", buf[:k])
	// Output:
	// READY=1
	// STATUS=4/4 workers ready, generation 1
}

// Without NOTIFY_SOCKET — a laptop, a container — every method is a no-op.
func ExampleNotifier_Enabled() {
	old, had := os.LookupEnv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	defer func() {
		if had {
			os.Setenv("NOTIFY_SOCKET", old)
		}
	}()

	n := systemd.NewNotifier()
	fmt.Println(n.Enabled(), n.Ready("serving"), n.Stopping())
	// Output: false <nil> <nil>
}
