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
// stream fails. A session the node does not serve is ErrNotServed. With
// req.Moderate the watcher is seated as a moderator while it streams; a
// refusal is ErrRefused (errors.Is), worded for them.
//
// key is the cluster's host key: Watch proves it, and talks only to a
// node that presents it.
func Watch(ctx context.Context, addr string, key ssh.Signer, req WatchRequest, w io.Writer, resize func(cols, rows int) error) error {
	cmd := "watch " + req.Session
	switch {
	case req.Moderate:
		cmd = "moderate " + req.Session
	case req.FromStart:
		cmd += " from-start"
	}
	c, err := dial(ctx, addr, key, req.Session, req.Node, map[string]string{"SEKISHO_STOP_HINT": req.StopHint, "SEKISHO_WATCHER": req.Watcher}, cmd)
	if err != nil {
		return err
	}
	defer c.close()
	if err := readFrames(c.ch, w, resize); err != nil {
		return watchErr(ctx, addr, err)
	}
	return c.finish(ctx, addr)
}

// Control sends a moderator's one-shot request to the node at addr and
// returns its answer. A session the node does not serve is ErrNotServed;
// a refusal is ErrRefused (errors.Is), worded for the moderator.
func Control(ctx context.Context, addr string, key ssh.Signer, req ControlRequest) (string, error) {
	if strings.ContainsAny(req.Verb, " \t\r\n") || req.Verb == "" {
		return "", fmt.Errorf("peer: %q is not a moderation request", req.Verb)
	}
	c, err := dial(ctx, addr, key, req.Session, req.Node, map[string]string{"SEKISHO_WATCHER": req.Watcher, "SEKISHO_TEXT": req.Text},
		"moderation "+req.Session+" "+req.Verb)
	if err != nil {
		return "", err
	}
	defer c.close()
	answer, err := io.ReadAll(io.LimitReader(c.ch, 64<<10))
	if err != nil {
		return "", watchErr(ctx, addr, err)
	}
	if err := c.finish(ctx, addr); err != nil {
		return "", err
	}
	return string(answer), nil
}

// call is one request to another node: a connection with one session
// channel running one command.
type call struct {
	nc         net.Conn
	stop       func() bool
	client     *ssh.Client
	ch         ssh.Channel
	status     chan int
	stderr     bytes.Buffer
	stderrDone chan struct{}
}

// dial connects to the node at addr as node, proving key, and runs cmd
// on a session channel with env set.
func dial(ctx context.Context, addr string, key ssh.Signer, session, node string, env map[string]string, cmd string) (*call, error) {
	if strings.ContainsAny(session, " \t\r\n") || session == "" {
		return nil, fmt.Errorf("peer: %q is not a session ID", session)
	}
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node at %s: %w", addr, err)
	}
	c := &call{nc: nc, status: make(chan int, 1), stderrDone: make(chan struct{})}
	// ctx ends the connection whatever it is doing.
	c.stop = context.AfterFunc(ctx, func() { nc.Close() })
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()
	user := node
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
		return nil, watchErr(ctx, addr, err)
	}
	nc.SetDeadline(time.Time{})
	c.client = ssh.NewClient(cc, chans, reqs)
	ch, creqs, err := c.client.OpenChannel("session", nil)
	if err != nil {
		return nil, watchErr(ctx, addr, err)
	}
	c.ch = ch
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
		c.status <- code
	}()
	go func() {
		defer close(c.stderrDone)
		io.Copy(&c.stderr, io.LimitReader(ch.Stderr(), 4<<10))
		io.Copy(io.Discard, ch.Stderr())
	}()
	for name, value := range env {
		if value != "" {
			if _, err := ch.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{name, value})); err != nil {
				return nil, watchErr(ctx, addr, err)
			}
		}
	}
	accepted, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{cmd}))
	if err != nil {
		return nil, watchErr(ctx, addr, err)
	}
	if !accepted {
		return nil, fmt.Errorf("node at %s refused the request", addr)
	}
	ok = true
	return c, nil
}

// finish waits for the command's exit status and message, and says how
// it ended.
func (c *call) finish(ctx context.Context, addr string) error {
	// The server sends its status and message before it closes.
	c.ch.Close()
	code := <-c.status
	<-c.stderrDone
	msg := strings.TrimPrefix(strings.TrimSpace(printable(c.stderr.String())), "sekisho: ")
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case code == exitEnded:
		return nil
	case code == exitNotServed && (msg == "" || msg == ErrNotServed.Error()):
		return fmt.Errorf("node at %s: %w", addr, ErrNotServed)
	case code == exitNotServed:
		return fmt.Errorf("node at %s: %w (%s)", addr, ErrNotServed, strings.TrimPrefix(msg, ErrNotServed.Error()+": "))
	case code == exitRefused:
		return Refusal(msg)
	case code < 0:
		return fmt.Errorf("node at %s ended the stream without an exit status (it may be stopping)", addr)
	case msg == "":
		msg = "exit status " + strconv.Itoa(code)
	}
	return fmt.Errorf("node at %s: %s", addr, msg)
}

func (c *call) close() {
	if c.ch != nil {
		c.ch.Close()
	}
	if c.client != nil {
		c.client.Close()
	}
	c.stop()
	c.nc.Close()
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
