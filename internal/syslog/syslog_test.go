package syslog

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

var at = time.Date(2026, 12, 7, 10, 21, 3, 118123456, time.FixedZone("JST", 9*3600))

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		name string
		e    broker.AuditEvent
		want string
	}{
		{"notice with every field",
			broker.AuditEvent{At: at, Kind: broker.EventSessionStart, Technician: "li", Target: "db-jp-01", Source: "203.0.113.9:50022", Session: "s1", Detail: `{"cross_border":true}`},
			`<85>1 2026-12-07T01:21:03.118123Z node-a sekisho 42 session.start [sekisho@32473 technician="li" target="db-jp-01" source="203.0.113.9:50022" session="s1"] ` +
				`{"at":"2026-12-07T10:21:03.118123456+09:00","kind":"session.start","technician":"li","target":"db-jp-01","source":"203.0.113.9:50022","session":"s1","detail":"{\"cross_border\":true}"}`},
		{"warning, empty fields left out, values escaped",
			broker.AuditEvent{At: at.UTC(), Kind: broker.EventAuthFailed, Technician: `a"b\c]d`, Detail: "x"},
			`<84>1 2026-12-07T01:21:03.118123Z node-a sekisho 42 auth.failed [sekisho@32473 technician="a\"b\\c\]d"] ` +
				`{"at":"2026-12-07T01:21:03.118123456Z","kind":"auth.failed","technician":"a\"b\\c]d","detail":"x"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := string(Format(c.e, 10, "node-a", "sekisho", "42", DefaultSDID))
			if got != c.want {
				t.Errorf("Format:\n got %s\nwant %s", got, c.want)
			}
		})
	}
	// Header fields: no spaces, bounded, "-" when empty.
	got := string(Format(broker.AuditEvent{At: at, Kind: "x y"}, 4, "", strings.Repeat("a", 60), "1", DefaultSDID))
	if want := "<37>1 2026-12-07T01:21:03.118123Z - " + strings.Repeat("a", 48) + " 1 x_y [sekisho@32473] "; !strings.HasPrefix(got, want) {
		t.Errorf("Format = %s\nwant the prefix %s", got, want)
	}
}

func TestParseAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"udp://127.0.0.1:514":      "udp 127.0.0.1:514",
		"tcp://siem.example:601":   "tcp siem.example:601",
		"tls://[2001:db8::1]:6514": "tls [2001:db8::1]:6514",
		"unix:///dev/log":          "unixgram /dev/log",
		"tcp://siem.example":       "error: want tcp://HOST:PORT",
		"unix://dev/log":           "error: three slashes",
		"http://siem.example:514":  "error: the scheme must be",
		"siem.example:514":         "error: the scheme must be",
		"udp://127.0.0.1:514/x":    "error: want udp://HOST:PORT",
		"/dev/log":                 "error: is not udp://",
	} {
		n, w, err := ParseAddress(addr)
		got := n + " " + w
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(want, "error: ") && got != want || strings.HasPrefix(want, "error: ") && !strings.Contains(got, strings.TrimPrefix(want, "error: ")) {
			t.Errorf("ParseAddress(%q) = %q, want %q", addr, got, want)
		}
	}
}

// collector is a TCP syslog collector that reads octet-counted frames.
type collector struct {
	ln     net.Listener
	msgs   chan string
	closed chan struct{} // a connection was closed by the collector
}

func newCollector(t *testing.T, closeAfterFirst bool) *collector {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := &collector{ln: ln, msgs: make(chan string, 100), closed: make(chan struct{}, 10)}
	go func() {
		first := true
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(conn)
			for {
				n, err := r.ReadString(' ')
				if err != nil {
					break
				}
				size, _ := strconv.Atoi(strings.TrimSpace(n))
				b := make([]byte, size)
				if _, err := io.ReadFull(r, b); err != nil {
					break
				}
				c.msgs <- string(b)
				if first && closeAfterFirst {
					first = false
					break
				}
			}
			conn.Close()
			c.closed <- struct{}{}
		}
	}()
	return c
}

func (c *collector) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message at the collector in 10 s")
		return ""
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A collector that drops the connection between two events loses none:
// the sender finds the connection closed before writing and sends again
// on a new one, in order. (One that dies in the middle of a write may
// lose that message: the store stays the record.)
func TestSenderReconnectsInOrder(t *testing.T) {
	c := newCollector(t, true)
	s, err := New(Config{Address: "tcp://" + c.ln.Addr().String(), Facility: 10, Hostname: "node-a"}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	s.Send(broker.AuditEvent{At: at, Kind: broker.EventRefused, Detail: "one"})
	if m := c.next(t); !strings.Contains(m, `"detail":"one"`) {
		t.Fatalf("first message %q", m)
	}
	// The collector closed that connection, as a collector restarting
	// does between two events.
	<-c.closed
	for _, d := range []string{"two", "three"} {
		s.Send(broker.AuditEvent{At: at, Kind: broker.EventRefused, Detail: d})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"two", "three"} {
		if m := c.next(t); !strings.Contains(m, `"detail":"`+d+`"`) {
			t.Fatalf("want %s next, got %q", d, m)
		}
	}
	if s.Sent() != 3 || s.Dropped() != 0 {
		t.Errorf("sent %d, dropped %d; want 3, 0", s.Sent(), s.Dropped())
	}
}

// Without a collector the queue fills and then drops, counted; Close
// gives up when its context ends and says how many were not sent.
func TestSenderDropsWhenFullAndCloseGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	s, err := New(Config{Address: "tcp://" + addr, Queue: 3}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		s.Send(broker.AuditEvent{At: at, Kind: broker.EventRefused})
	}
	// One is taken out of the queue to be sent, 3 wait: 6 or 7 dropped.
	if d := s.Dropped(); d < 6 || d > 7 {
		t.Errorf("dropped %d of 10 with a queue of 3, want 6 or 7", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); err == nil || !strings.Contains(err.Error(), "not sent") {
		t.Errorf("Close with the collector away: %v, want an error saying events were not sent", err)
	}
}

// A message the collector can never take (a datagram too large for UDP)
// is dropped, counted, after a few tries on fresh connections: the events
// after it still go.
func TestSenderDropsWhatTheCollectorRefuses(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	s, err := New(Config{Address: "udp://" + pc.LocalAddr().String()}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	s.Send(broker.AuditEvent{At: at, Kind: broker.EventRefused, Detail: strings.Repeat("x", 70000)})
	s.Send(broker.AuditEvent{At: at, Kind: broker.EventRefused, Detail: "after"})
	pc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 70000)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("nothing reached the collector: %v", err)
	}
	if !strings.Contains(string(buf[:n]), `"detail":"after"`) {
		t.Errorf("the collector got %q first, want the event after the refused one", buf[:min(n, 200)])
	}
	if s.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", s.Dropped())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Error(err)
	}
}

// Close twice, both past their deadline, and Close of a sender that never
// sent: no panic, no wait.
func TestSenderCloseTwice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, _ := New(Config{Address: "tcp://" + addr}, quiet())
	s.Send(broker.AuditEvent{At: at, Kind: broker.EventRefused})
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		s.Close(ctx)
		cancel()
	}
	idle, _ := New(Config{Address: "tcp://" + addr}, quiet())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := idle.Close(ctx); err != nil {
		t.Errorf("Close of a sender that never sent: %v", err)
	}
}
