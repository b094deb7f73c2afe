package session

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// The relay benchmarks measure the copy path with recording on.
// BenchmarkRelay runs the whole of it in one process over loopback TCP:
// an x/crypto client as the technician, the Server, and an x/crypto
// target that streams on demand; so the process also pays the client's
// and the target's encryption (four AES-GCM or ChaCha20 passes per byte
// where sekisho alone makes two). BenchmarkCopyRecorded is copyRecorded
// alone, between memory and memory, with and without the recorder. Run
// them with
//
//	go test -run=NONE -bench='Relay|CopyRecorded' -benchmem ./session/

// relayBenchBytes is what one operation of BenchmarkRelay moves.
const relayBenchBytes = 16 << 20

// streamTarget serves SSH on loopback: an exec of "download N" writes N
// bytes and exits 0; an exec of "upload" reads until EOF and exits 0.
func streamTarget(b *testing.B, hostKey ssh.Signer) string {
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	block := make([]byte, 64<<10)
	for i := range block {
		block[i] = byte(i*7 + i>>8)
	}
	serve := func(ch ssh.Channel, reqs <-chan *ssh.Request) {
		defer ch.Close()
		for req := range reqs {
			var cmd stringRequest
			if req.Type != "exec" || ssh.Unmarshal(req.Payload, &cmd) != nil {
				req.Reply(false, nil)
				continue
			}
			req.Reply(true, nil)
			go ssh.DiscardRequests(reqs)
			if size, ok := strings.CutPrefix(cmd.Value, "download "); ok {
				n, _ := strconv.Atoi(size)
				for n > 0 {
					k, err := ch.Write(block[:min(n, len(block))])
					if err != nil {
						return
					}
					n -= k
				}
			} else {
				// Large reads, as sshd makes them: x/crypto answers every
				// read with a window adjustment, so io.Copy's 8 KiB reads
				// would cost the relay a packet per 8 KiB.
				buf := make([]byte, 256<<10)
				for {
					_, err := ch.Read(buf)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return
					}
				}
			}
			ch.SendRequest("exit-status", false, ssh.Marshal(exitStatus{Status: 0}))
			ch.CloseWrite()
			return
		}
	}
	acceptChannels(ln, cfg, serve)
	return ln.Addr().String()
}

// relayClient starts a Server whose target is a streamTarget and returns
// a technician's connection to it that uses cipher.
func relayClient(b *testing.B, cipher string) *ssh.Client {
	hostKey, techKey := newSigner(), newSigner()
	fb := &fakeBroker{
		tech: &broker.Technician{Name: "li", Keys: []ssh.PublicKey{techKey.PublicKey()}},
		tg: &broker.Target{Name: "db", Address: streamTarget(b, hostKey), Login: "ops",
			HostKeys: []ssh.PublicKey{hostKey.PublicKey()}},
		ca: newSigner(),
	}
	srv, addr := serveOnLoopback(b, Config{HostKey: newSigner(), Broker: fb, RecordingDir: b.TempDir(),
		Logger: slog.New(slog.DiscardHandler)})
	cfg := &ssh.ClientConfig{User: "li+db", Auth: []ssh.AuthMethod{ssh.PublicKeys(techKey)},
		HostKeyCallback: ssh.FixedHostKey(srv.cfg.HostKey.PublicKey()), Timeout: 10 * time.Second}
	cfg.Ciphers = []string{cipher}
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// relayOnce opens an exec channel through sekisho and moves n bytes:
// from the target to the technician (download) or back (upload).
func relayOnce(c *ssh.Client, download bool, n int, buf []byte) error {
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		return err
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	cmd := "upload"
	if download {
		cmd = "download " + strconv.Itoa(n)
	}
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(stringRequest{Value: cmd}))
	if err != nil || !ok {
		return fmt.Errorf("exec refused: %v", err)
	}
	if !download {
		for left := n; left > 0; {
			k, err := ch.Write(buf[:min(left, len(buf))])
			if err != nil {
				return err
			}
			left -= k
		}
		ch.CloseWrite()
	}
	got := 0
	for {
		k, err := ch.Read(buf)
		got += k
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if download && got != n {
		return fmt.Errorf("technician got %d bytes of %d", got, n)
	}
	return nil
}

// BenchmarkRelay moves 16 MiB per operation through sekisho over an exec
// channel, recording on (exact bytes: x-stdout or x-stdin events), the
// technician's leg with the given cipher (the target leg uses x/crypto's
// default, aes128-gcm, as sekisho does).
func BenchmarkRelay(b *testing.B) {
	for _, dir := range []string{"download", "upload"} {
		for _, cipher := range []string{"aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"} {
			b.Run(dir+"/"+strings.TrimSuffix(cipher, "@openssh.com"), func(b *testing.B) {
				c := relayClient(b, cipher)
				buf := make([]byte, 256<<10)
				b.SetBytes(relayBenchBytes)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := relayOnce(c, dir == "download", relayBenchBytes, buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// memSource yields left bytes, filling every read as an SSH channel with
// a full window does.
type memSource struct {
	block []byte
	left  int
}

func (m *memSource) Read(p []byte) (int, error) {
	if m.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), m.left)
	for done := 0; done < n; {
		done += copy(p[done:n], m.block)
	}
	m.left -= n
	return n, nil
}

// BenchmarkCopyRecorded is copyRecorded alone, 1 MiB per operation, from
// memory to io.Discard: "recorded" hands every read to an exec channel's
// recording (exact bytes), "unrecorded" to a recorder that does nothing.
func BenchmarkCopyRecorded(b *testing.B) {
	block := make([]byte, 64<<10)
	for i := range block {
		block[i] = byte(i*7 + i>>8)
	}
	for _, recorded := range []bool{true, false} {
		name := "recorded"
		if !recorded {
			name = "unrecorded"
		}
		b.Run(name, func(b *testing.B) {
			record := func([]byte) error { return nil }
			if recorded {
				s, err := recording.Create(b.TempDir(), recording.Meta{ID: "0b7f7b4e-3c1a-4f43-9d6e-8f1f3f0d2a11", Start: time.Now()})
				if err != nil {
					b.Fatal(err)
				}
				rec, err := s.Channel(recording.ChannelInfo{Kind: "exec", Command: "cat data"})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() {
					rec.Close()
					s.End(time.Now(), "done", 0, 0)
				})
				record = rec.Stdout
			}
			src := &memSource{block: block, left: b.N << 20}
			var n atomic.Int64
			b.SetBytes(1 << 20)
			b.ReportAllocs()
			b.ResetTimer()
			eof, err := copyRecorded(src, io.Discard, record, &n)
			b.StopTimer()
			if err != nil || !eof || n.Load() != int64(b.N)<<20 {
				b.Fatalf("copyRecorded: eof %v, err %v, %d bytes of %d", eof, err, n.Load(), b.N<<20)
			}
		})
	}
}
