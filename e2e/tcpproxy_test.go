package e2e

import (
	"net"
	"sync"
	"testing"
)

// Directions through a tcpProxy.
const (
	toUpstream = 0 // from the side that dialled the proxy to the upstream
	toDialer   = 1 // back
)

// startTCPProxy listens on loopback and joins each connection to a new
// one to upstream: a network between two SSH peers that a test can watch,
// corrupt or silence. Every chunk read going dir passes through, which
// returns the bytes to forward (nil forwards nothing: the chunk is lost,
// and the reading goes on). Each side is closed when the other ends. It
// returns the proxy's address; the listener closes and the copies end
// with the test.
func startTCPProxy(t *testing.T, upstream string, through func(dir int, b []byte) []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		conns.Wait()
	})
	pipe := func(dst, src net.Conn, dir int) {
		defer conns.Done()
		defer dst.Close()
		defer src.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if out := through(dir, buf[:n]); len(out) > 0 {
					if _, werr := dst.Write(out); werr != nil {
						return
					}
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, u)
			mu.Unlock()
			conns.Add(2)
			go pipe(u, c, toUpstream)
			go pipe(c, u, toDialer)
		}
	}()
	return ln.Addr().String()
}
