package peer

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// dialTimeout bounds the connection to another node and its handshake.
const dialTimeout = 10 * time.Second

// Watch asks the node at addr to stream live session req.Session, and
// writes the stream's output to w and its terminal sizes to resize (nil
// when sizes are not followed; the first is the size of the terminal
// joined) until the session ends (nil), ctx is done (ctx.Err()), or the
// stream fails. A session the node does not serve is ErrNotServed.
//
// key is the cluster's host key: Watch proves it, and talks only to a
// node that presents it.
func Watch(ctx context.Context, addr string, key ssh.Signer, req WatchRequest, w io.Writer, resize func(cols, rows int) error) error {
	if strings.ContainsAny(req.Session, " \t\r\n") || req.Session == "" {
		return fmt.Errorf("peer: %q is not a session ID", req.Session)
	}
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("node at %s: %w", addr, err)
	}
	// ctx ends the connection whatever it is doing.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	defer nc.Close()
	user := req.Node
	if user == "" {
		user = "sekisho"
	}
	nc.SetDeadline(time.Now().Add(dialTimeout))
	cc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(key.PublicKey()),
		ClientVersion:   "SSH-2.0-sekisho-peer",
	})
	if err != nil {
		return watchErr(ctx, addr, err)
	}
	nc.SetDeadline(time.Time{})
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
	ch, creqs, err := client.OpenChannel("session", nil)
	if err != nil {
		return watchErr(ctx, addr, err)
	}
	defer ch.Close()
	status := make(chan int, 1)
	go func() {
		code := -1
		for r := range creqs {
			if r.Type == "exit-status" && len(r.Payload) == 4 {
				code = int(binary.BigEndian.Uint32(r.Payload))
			}
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
		status <- code
	}()
	var stderr bytes.Buffer
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		io.Copy(&stderr, io.LimitReader(ch.Stderr(), 4<<10))
		io.Copy(io.Discard, ch.Stderr())
	}()
	for name, value := range map[string]string{"SEKISHO_STOP_HINT": req.StopHint, "SEKISHO_WATCHER": req.Watcher} {
		if value != "" {
			if _, err := ch.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{name, value})); err != nil {
				return watchErr(ctx, addr, err)
			}
		}
	}
	cmd := "watch " + req.Session
	if req.FromStart {
		cmd += " from-start"
	}
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{cmd}))
	if err != nil {
		return watchErr(ctx, addr, err)
	}
	if !ok {
		return fmt.Errorf("node at %s refused the watch request", addr)
	}
	if err := readFrames(ch, w, resize); err != nil {
		return watchErr(ctx, addr, err)
	}
	// The server sends its status and message before it closes.
	ch.Close()
	code := <-status
	<-stderrDone
	msg := strings.TrimPrefix(strings.TrimSpace(printable(stderr.String())), "sekisho: ")
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case code == exitEnded:
		return nil
	case code == exitNotServed && (msg == "" || msg == ErrNotServed.Error()):
		return fmt.Errorf("node at %s: %w", addr, ErrNotServed)
	case code == exitNotServed:
		return fmt.Errorf("node at %s: %w (%s)", addr, ErrNotServed, strings.TrimPrefix(msg, ErrNotServed.Error()+": "))
	case code < 0:
		return fmt.Errorf("node at %s ended the stream without an exit status (it may be stopping)", addr)
	case msg == "":
		msg = "exit status " + strconv.Itoa(code)
	}
	return fmt.Errorf("node at %s: %s", addr, msg)
}

// watchErr is err, or ctx's error when ctx ended the connection.
func watchErr(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("node at %s: %w", addr, err)
}

// printable drops control characters from a message of another node's.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == ' ' || strconv.IsPrint(r) {
			return r
		}
		return -1
	}, s)
}
