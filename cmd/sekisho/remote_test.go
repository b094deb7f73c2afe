package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sekisho/sekisho/internal/node/nodetest"
)

func TestRemoteArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		opts remoteOptions
		pass []string
	}{
		{"none", []string{"grants", "--json"}, remoteOptions{}, []string{"grants", "--json"}},
		{"before, between and after",
			[]string{"--as", "kenji", "approve", "--config=/etc/s.yaml", "-i", "k", "12", "--comment", "ok", "--server", "h:22", "--known-hosts", "kh"},
			remoteOptions{config: "/etc/s.yaml", server: "h:22", user: "kenji", identity: "k", knownHosts: "kh"},
			[]string{"approve", "12", "--comment", "ok"}},
		{"single dash and =", []string{"kill", "-as=kenji", "-identity", "k", "abc"},
			remoteOptions{user: "kenji", identity: "k"}, []string{"kill", "abc"}},
		{"a value that looks like a conn flag", []string{"deny", "3", "--reason", "--as", "--as", "kenji"},
			remoteOptions{user: "kenji"}, []string{"deny", "3", "--reason", "--as"}},
		{"every word of a reason", []string{"deny", "3", "--reason", "use", "-i", "flag", "--as", "kenji"},
			remoteOptions{user: "kenji"}, []string{"deny", "3", "--reason", "use", "-i", "flag"}},
		{"sessions --live", []string{"sessions", "--json", "--live", "--config", "c"},
			remoteOptions{config: "c"}, []string{"sessions", "--json", "--live"}},
	} {
		opts, pass, err := parseRemoteArgs(tc.args)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if opts != tc.opts || !reflect.DeepEqual(pass, tc.pass) {
			t.Errorf("%s: parseRemoteArgs(%q) = %+v %q, want %+v %q", tc.name, tc.args, opts, pass, tc.opts, tc.pass)
		}
	}
	var ue usageError
	if _, _, err := parseRemoteArgs([]string{"grants", "--server"}); !errors.As(err, &ue) {
		t.Errorf("--server without a value: err = %v, want a usage error", err)
	}
}

func TestRemoteQuote(t *testing.T) {
	t.Parallel()
	got := quoteRemote([]string{"deny", "7", "--reason", `it's "down", see \ #42`, ""})
	want := `'deny' '7' '--reason' 'it'\''s "down", see \ #42' ''`
	if got != want {
		t.Errorf("quoteRemote = %s, want %s", got, want)
	}
}

func TestRemoteLiveRequested(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--json"}, false},
		{[]string{"--technician", "kenji", "--live"}, true},
		{[]string{"--live", "--json"}, true},
	} {
		if got := liveRequested(tc.args); got != tc.want {
			t.Errorf("liveRequested(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestRemoteDialAddress(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		":2222": "127.0.0.1:2222", "0.0.0.0:2222": "127.0.0.1:2222", "[::]:2222": "[::1]:2222",
		"10.0.0.5:22": "10.0.0.5:22", "bastion.example:2222": "bastion.example:2222",
	} {
		if got := dialAddress(in); got != want {
			t.Errorf("dialAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRemoteRun runs a command against an SSH server that echoes the
// command line it received and exits with status 3, the host key pinned
// from the config.
func TestRemoteRun(t *testing.T) {
	t.Parallel()
	env := newRemoteEnv(t)
	srv := startEchoServer(t, env, 3)
	cfg := env.writeConfig(t, srv.addr, env.hostKey)
	var stdout, stderr bytes.Buffer
	code, err := runRemote(context.Background(), []string{"deny", "--config", cfg, "7", "--reason", "it's down, see #42",
		"--identity", env.clientKeyFile, "--as", "kenji"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("runRemote: %v (stderr %q)", err, stderr.String())
	}
	if code != 3 {
		t.Errorf("exit status = %d, want 3", code)
	}
	if want := `'deny' '7' '--reason' 'it'\''s down, see #42'` + "\n"; stdout.String() != want {
		t.Errorf("stdout = %q, want %q", stdout.String(), want)
	}
	if got := <-srv.users; got != "kenji" {
		t.Errorf("logged in as %q, want kenji", got)
	}
}

// TestRemoteSessionsLive checks that `sekisho sessions --live` goes to the
// server, not to the store.
func TestRemoteSessionsLive(t *testing.T) {
	t.Parallel()
	env := newRemoteEnv(t)
	srv := startEchoServer(t, env, 0)
	cfg := env.writeConfig(t, srv.addr, env.hostKey)
	// The echo goes to the test's stdout; the command line is checked
	// as the server received it.
	err := run(context.Background(), []string{"sessions", "--config", cfg, "--live", "-i", env.clientKeyFile, "--as", "kenji"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := <-srv.lines, `'sessions' '--live'`; got != want {
		t.Errorf("server ran %q, want %q", got, want)
	}
}

func TestRemoteWrongHostKey(t *testing.T) {
	t.Parallel()
	env := newRemoteEnv(t)
	srv := startEchoServer(t, env, 0)
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	cfg := env.writeConfig(t, srv.addr, other)
	_, err := runRemote(context.Background(), []string{"grants", "--config", cfg, "-i", env.clientKeyFile, "--as", "kenji"}, io.Discard, io.Discard)
	if !errors.Is(err, errHostKey) || !strings.Contains(err.Error(), "presented host key "+ssh.FingerprintSHA256(env.hostPub)) {
		t.Fatalf("err = %v, want a host key mismatch naming the server's key", err)
	}
	select {
	case line := <-srv.lines:
		t.Errorf("the command %q ran on a server with the wrong host key", line)
	default:
	}
}

// TestRemoteKnownHosts checks --server with --known-hosts: an unknown host
// is refused with the line to add, a known one is accepted; and that an
// unreadable host key without --server is refused with what to do.
func TestRemoteKnownHosts(t *testing.T) {
	t.Parallel()
	env := newRemoteEnv(t)
	srv := startEchoServer(t, env, 3)
	cfg := env.writeConfig(t, srv.addr, env.hostKey)
	if err := os.Remove(filepath.Join(env.dir, "bastion_host_key")); err != nil {
		t.Fatal(err)
	}
	login := []string{"--config", cfg, "-i", env.clientKeyFile, "--as", "kenji"}
	_, err := runRemote(context.Background(), append([]string{"grants"}, login...), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "cannot read the host key of the server from") || !strings.Contains(err.Error(), "--known-hosts") {
		t.Fatalf("unreadable host key: err = %v, want one that says to pass --server and --known-hosts", err)
	}

	kh := filepath.Join(env.dir, "known_hosts")
	writeRemoteFile(t, kh, "")
	args := append([]string{"grants", "--server", srv.addr, "--known-hosts", kh}, login...)
	_, err = runRemote(context.Background(), args, io.Discard, io.Discard)
	line := knownhosts.Line([]string{knownhosts.Normalize(srv.addr)}, env.hostPub)
	if !errors.Is(err, errHostKey) || !strings.Contains(err.Error(), "is not in "+kh) || !strings.Contains(err.Error(), line) {
		t.Fatalf("unknown host: err = %v, want one that names %s and the line %s", err, kh, line)
	}
	writeRemoteFile(t, kh, line+"\n")
	code, err := runRemote(context.Background(), args, io.Discard, io.Discard)
	if err != nil || code != 3 {
		t.Fatalf("known host: runRemote = %d, %v; want 3", code, err)
	}
}

// remoteEnv holds the keys of a test server and client.
type remoteEnv struct {
	dir           string
	hostKey       ed25519.PrivateKey
	hostPub       ssh.PublicKey
	clientPub     ssh.PublicKey
	clientKeyFile string
}

func newRemoteEnv(t *testing.T) *remoteEnv {
	t.Helper()
	e := &remoteEnv{dir: t.TempDir()}
	e.hostKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	e.hostPub = remotePublicKey(t, e.hostKey)
	client := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	e.clientPub = remotePublicKey(t, client)
	e.clientKeyFile = filepath.Join(e.dir, "id_ed25519")
	writeRemoteFile(t, e.clientKeyFile, remoteKeyPEM(t, client))
	return e
}

// writeConfig writes a valid config whose listen is addr and whose host
// key file holds hostKey, and returns its path.
func (e *remoteEnv) writeConfig(t *testing.T, addr string, hostKey ed25519.PrivateKey) string {
	t.Helper()
	text, _ := nodetest.Config(t)
	text = regexp.MustCompile(`(?m)^listen: .*$`).ReplaceAllString(text, "listen: "+addr)
	text = regexp.MustCompile(`(?m)^host_key: .*$`).ReplaceAllString(text, "host_key: bastion_host_key")
	writeRemoteFile(t, filepath.Join(e.dir, "bastion_host_key"), remoteKeyPEM(t, hostKey))
	path := filepath.Join(e.dir, "sekisho.yaml")
	writeRemoteFile(t, path, text)
	return path
}

type echoServer struct {
	addr  string
	users chan string // who logged in
	lines chan string // the command lines run
}

// startEchoServer starts an SSH server on loopback that accepts env's
// client key, echoes each exec request's command line and exits with
// status.
func startEchoServer(t *testing.T, env *remoteEnv, status uint32) *echoServer {
	t.Helper()
	signer, err := ssh.NewSignerFromKey(env.hostKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if !bytes.Equal(key.Marshal(), env.clientPub.Marshal()) {
			return nil, errors.New("unknown key")
		}
		return nil, nil
	}}
	cfg.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &echoServer{addr: ln.Addr().String(), users: make(chan string, 8), lines: make(chan string, 8)}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { srv.serve(nc, cfg, status) })
		}
	})
	return srv
}

func (s *echoServer) serve(nc net.Conn, cfg *ssh.ServerConfig, status uint32) {
	defer nc.Close()
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	s.users <- sc.User()
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		ch, chReqs, err := nch.Accept()
		if err != nil {
			return
		}
		for req := range chReqs {
			var cmd struct{ Line string }
			if req.Type != "exec" || ssh.Unmarshal(req.Payload, &cmd) != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			s.lines <- cmd.Line
			fmt.Fprintln(ch, cmd.Line)
			ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
			ch.Close()
		}
	}
}

func remotePublicKey(t *testing.T, k ed25519.PrivateKey) ssh.PublicKey {
	t.Helper()
	pub, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func remoteKeyPEM(t *testing.T, k ed25519.PrivateKey) string {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

func writeRemoteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
