package testkit

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections on a loopback port the kernel chose to
// a backend, until Cut: from then on it forwards nothing either way,
// keeping every connection open, as a network partition does. It closes
// when the test ends.
type Proxy struct {
	// Addr is the proxy's address, 127.0.0.1:PORT.
	Addr string

	ln    net.Listener
	dial  func() (net.Conn, error)
	cut   atomic.Bool
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// StartProxy listens on 127.0.0.1:0 and forwards each connection to a
// connection from dial.
func StartProxy(t testing.TB, dial func() (net.Conn, error)) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, dial: dial}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Cut stops forwarding, in both directions, on every connection now and
// later; what arrives is read and dropped.
func (p *Proxy) Cut() { p.cut.Store(true) }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		if p.cut.Load() {
			p.pipe(c, nil)
			continue
		}
		b, err := p.dial()
		if err != nil {
			c.Close()
			continue
		}
		p.track(b)
		p.pipe(c, b)
		p.pipe(b, c)
	}
}

// track keeps c to close at the end.
func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

// pipe copies from src to dst while the proxy is not cut (dst nil: drops
// everything); at src's end it closes dst for writing.
func (p *Proxy) pipe(src, dst net.Conn) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && dst != nil && !p.cut.Load() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					dst = nil
				}
			}
			if err != nil {
				if dst != nil && !p.cut.Load() {
					if tc, ok := dst.(interface{ CloseWrite() error }); ok {
						_ = tc.CloseWrite()
					} else {
						dst.Close()
					}
				}
				return
			}
		}
	}()
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
