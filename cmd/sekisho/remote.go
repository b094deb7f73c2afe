package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sekisho/sekisho/internal/node"
)

// The remote commands (request, approve, sessions --live, ...) run on the
// running server: the CLI logs in over SSH as the technician, exactly as
// `ssh TECHNICIAN@bastion COMMAND` would, so they add no unauthenticated
// surface and the server decides, as for any login, who may do what.

var (
	// errHostKey means the server's host key could not be verified.
	errHostKey = errors.New("host key verification failed")
	// errNoCode means the server asks for a TOTP code that cannot be had.
	errNoCode = errors.New("the server asks for a verification code and there is no terminal; set SEKISHO_TOTP to the current code")
)

// remoteTimeout bounds the connection and the SSH handshake.
const remoteTimeout = 15 * time.Second

// remoteOptions are the connection flags of the remote commands.
type remoteOptions struct {
	config, server, user, identity, knownHosts string
}

// field returns the option that flag sets, or nil if it is not a
// connection flag.
func (o *remoteOptions) field(flag string) *string {
	if !strings.HasPrefix(flag, "-") {
		return nil
	}
	name := strings.TrimPrefix(flag[1:], "-")
	return map[string]*string{"config": &o.config, "server": &o.server, "as": &o.user,
		"i": &o.identity, "identity": &o.identity, "known-hosts": &o.knownHosts}[name]
}

// remoteValueFlags are the remote commands' flags that take a value; the
// value (every word up to the next --flag, as the server reads it) is
// passed through even if it looks like a connection flag.
var remoteValueFlags = map[string]bool{"--reason": true, "--comment": true, "--duration": true}

// parseRemoteArgs takes the connection flags out of args, wherever they
// are, and returns the rest unchanged for the server.
func parseRemoteArgs(args []string) (remoteOptions, []string, error) {
	var o remoteOptions
	var pass []string
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		if p := o.field(name); p != nil {
			if !hasVal {
				if i+1 >= len(args) {
					return o, nil, usageError{msg: name + " needs a value"}
				}
				i++
				val = args[i]
			}
			*p = val
			continue
		}
		pass = append(pass, args[i])
		if remoteValueFlags[args[i]] {
			for first := true; i+1 < len(args) && (first || !strings.HasPrefix(args[i+1], "--")); first = false {
				i++
				pass = append(pass, args[i])
			}
		}
	}
	return o, pass, nil
}

// quoteRemote joins args into a command line for the server, each in
// single quotes so that spaces and quotes survive its parser.
func quoteRemote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// liveRequested reports whether `sekisho sessions` asks for the live
// sessions of the running server rather than those in the store.
func liveRequested(args []string) bool { return slices.Contains(args, "--live") }

// cmdRemote runs args on the running server and exits with its status.
func cmdRemote(ctx context.Context, args []string) error {
	code, err := runRemote(ctx, args, os.Stdout, os.Stderr)
	if err == nil && code != 0 {
		os.Exit(code)
	}
	return err
}

// runRemote runs the command in args (its name first) on the running
// server and returns the command's exit status.
func runRemote(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	opts, remote, err := parseRemoteArgs(args)
	if err != nil {
		return 0, err
	}
	user := cmp.Or(opts.user, os.Getenv("SEKISHO_USER"), os.Getenv("USER"))
	if user == "" {
		return 0, usageError{msg: "who logs in? pass --as NAME or set SEKISHO_USER"}
	}
	addr, hostKey, err := opts.endpoint()
	if err != nil {
		return 0, err
	}
	keyAuth, closeKey, err := opts.keyAuth()
	if err != nil {
		return 0, err
	}
	defer closeKey()
	cc := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{keyAuth, ssh.KeyboardInteractive(answerChallenge)},
		HostKeyCallback: hostKey,
		BannerCallback:  func(msg string) error { _, err := io.WriteString(stderr, msg); return err },
		Timeout:         remoteTimeout,
	}
	return execRemote(ctx, addr, cc, quoteRemote(remote), stdout, stderr)
}

// endpoint returns the server's address and how to verify its host key:
// pinned to the config's host key when it is readable, else checked
// against a known_hosts file. It never skips the check.
func (o remoteOptions) endpoint() (string, ssh.HostKeyCallback, error) {
	var cfg *node.Config
	path, err := findConfig(o.config)
	if err == nil {
		if cfg, err = node.LoadConfig(path); err != nil {
			return "", nil, err
		}
	} else if o.server == "" {
		return "", nil, fmt.Errorf("%w; or pass --server HOST:PORT", err)
	}
	addr := o.server
	if addr == "" {
		addr = dialAddress(cfg.Listen)
	}
	if cfg != nil && o.knownHosts == "" {
		keyPath := cfg.Path(cfg.HostKey)
		b, err := os.ReadFile(keyPath)
		if err == nil {
			var signer ssh.Signer
			if signer, err = ssh.ParsePrivateKey(b); err == nil {
				return addr, pinHostKey(signer.PublicKey(), keyPath), nil
			}
		}
		if o.server == "" {
			return "", nil, fmt.Errorf("cannot read the host key of the server from %s: %v; run as a user who can read it, or pass --server HOST:PORT and --known-hosts FILE", keyPath, err)
		}
	}
	cb, err := knownHostsCallback(o.knownHosts)
	return addr, cb, err
}

// dialAddress turns a listen address into one to dial: a wildcard host
// becomes loopback.
func dialAddress(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// pinHostKey accepts only want, read from source.
func pinHostKey(want ssh.PublicKey, source string) ssh.HostKeyCallback {
	return func(host string, _ net.Addr, got ssh.PublicKey) error {
		if bytes.Equal(got.Marshal(), want.Marshal()) {
			return nil
		}
		return fmt.Errorf("%w: the server at %s presented host key %s, not %s from %s; is --server (or listen in the config) the right server?",
			errHostKey, host, ssh.FingerprintSHA256(got), ssh.FingerprintSHA256(want), source)
	}
}

// knownHostsCallback checks host keys against file (default
// ~/.ssh/known_hosts), with errors that say how to fix the file.
func knownHostsCallback(file string) (ssh.HostKeyCallback, error) {
	if file == "" {
		home, _ := os.UserHomeDir()
		file = filepath.Join(home, ".ssh", "known_hosts")
	}
	check, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("known hosts: %w; pass --known-hosts FILE, or --config with a readable host_key", err)
	}
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := check(host, remote, key)
		var ke *knownhosts.KeyError
		switch {
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("%w: %s is not in %s; if the server's fingerprint (ssh-keygen -lf HOST_KEY on the server) is %s, add this line to %s: %s",
				errHostKey, host, file, ssh.FingerprintSHA256(key), file, knownhosts.Line([]string{knownhosts.Normalize(host)}, key))
		case errors.As(err, &ke):
			return fmt.Errorf("%w: %s presented %s, but %s:%d holds another key for it; if the server's key changed on purpose, fix that line",
				errHostKey, host, ssh.FingerprintSHA256(key), ke.Want[0].Filename, ke.Want[0].Line)
		case err != nil:
			return fmt.Errorf("%w: %v", errHostKey, err)
		}
		return nil
	}, nil
}

// keyAuth returns the technician's key: -i FILE, else the ssh-agent, else
// ~/.ssh/id_ed25519; and a function to release it.
func (o remoteOptions) keyAuth() (ssh.AuthMethod, func(), error) {
	path := o.identity
	if path == "" {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return nil, nil, fmt.Errorf("ssh-agent at $SSH_AUTH_SOCK (%s): %w; start the agent or pass -i FILE", sock, err)
			}
			return ssh.PublicKeysCallback(agent.NewClient(conn).Signers), func() { conn.Close() }, nil
		}
		home, _ := os.UserHomeDir()
		path = filepath.Join(home, ".ssh", "id_ed25519")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("SSH key: %w; pass -i FILE or load your key into ssh-agent", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		return nil, nil, fmt.Errorf("SSH key %s has a passphrase; load it into ssh-agent (ssh-add %s) and run again without -i", path, path)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("SSH key %s: %w", path, err)
	}
	return ssh.PublicKeys(signer), func() {}, nil
}

// answerChallenge answers the server's keyboard-interactive questions (a
// TOTP code) on the terminal, or with $SEKISHO_TOTP when there is none.
func answerChallenge(_, instruction string, questions []string, _ []bool) ([]string, error) {
	if len(questions) == 0 {
		return nil, nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		code := os.Getenv("SEKISHO_TOTP")
		if code == "" {
			return nil, errNoCode
		}
		return slices.Repeat([]string{code}, len(questions)), nil
	}
	defer tty.Close()
	if instruction != "" {
		fmt.Fprintln(tty, instruction)
	}
	answers := make([]string, len(questions))
	in := bufio.NewReader(tty)
	for i, q := range questions {
		fmt.Fprint(tty, q)
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return nil, fmt.Errorf("read the answer to %q: %w", q, err)
		}
		answers[i] = strings.TrimSpace(line)
	}
	return answers, nil
}

// execRemote logs in to addr, runs line and copies its output; it returns
// the command's exit status.
func execRemote(ctx context.Context, addr string, cc *ssh.ClientConfig, line string, stdout, stderr io.Writer) (int, error) {
	d := net.Dialer{Timeout: cc.Timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("connect to %s: %w (is `sekisho serve` running there?)", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(time.Now().Add(cc.Timeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cc)
	if err != nil {
		if errors.Is(err, errHostKey) || errors.Is(err, errNoCode) {
			return 0, fmt.Errorf("connect to %s: %w", addr, err)
		}
		return 0, fmt.Errorf("log in to %s as %s: %w (check --as and the key: -i FILE or ssh-agent)", addr, cc.User, cmp.Or(ctx.Err(), err))
	}
	conn.SetDeadline(time.Time{})
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return 0, fmt.Errorf("open a session on %s: %w", addr, err)
	}
	defer sess.Close()
	sess.Stdout, sess.Stderr = stdout, stderr
	err = sess.Run(line)
	var exit *ssh.ExitError
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case err == nil:
		return 0, nil
	case errors.As(err, &exit) && exit.Signal() == "":
		return exit.ExitStatus(), nil
	}
	return 0, fmt.Errorf("run %s on %s: %w", line, addr, err)
}
