package listenq_test

import (
	"fmt"
	"net"

	"github.com/forkd/forkd/listenq"
)

func ExampleRead() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File() // a dup of the listening socket
	if err != nil {
		panic(err)
	}
	defer f.Close()

	c, err := net.Dial("tcp", l.Addr().String()) // queued, not yet accepted
	if err != nil {
		panic(err)
	}
	defer c.Close()

	q, err := listenq.Read(f)
	if err != nil {
		panic(err)
	}
	fmt.Println("waiting:", q.Len)
	// Output: waiting: 1
}
