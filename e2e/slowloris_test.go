package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/internal/hardening"
)

// kexInitPacket is an unencrypted SSH_MSG_KEXINIT binary packet offering
// what sekisho accepts, so that sekisho answers and then waits for the
// key exchange that never comes.
func kexInitPacket() []byte {
	var payload []byte
	payload = append(payload, 20) // SSH_MSG_KEXINIT
	payload = append(payload, make([]byte, 16)...)
	for _, list := range []string{
		"curve25519-sha256", "ssh-ed25519",
		"aes128-gcm@openssh.com", "aes128-gcm@openssh.com",
		"hmac-sha2-256", "hmac-sha2-256", "none", "none", "", "",
	} {
		payload = binary.BigEndian.AppendUint32(payload, uint32(len(list)))
		payload = append(payload, list...)
	}
	payload = append(payload, 0, 0, 0, 0, 0) // first_kex_packet_follows, reserved
	pad := 8 - (5+len(payload))%8
	if pad < 4 {
		pad += 8
	}
	pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)+pad))
	pkt = append(pkt, byte(pad))
	pkt = append(pkt, payload...)
	return append(pkt, make([]byte, pad)...)
}

// TestTenThousandStalledConnectionsFromManySources: 10,000 connections
// from 200 source addresses, half sending only a banner and half stopping
// in the middle of the key exchange, while a technician logs in again and
// again. Every stalled connection is closed by sekisho (refused at once,
// made room for, or at ssh.auth_timeout); every login succeeds; the
// refusals are audited per source and window, not per connection.
// It is a long test because the race detector, which make test uses,
// cannot track 10,000 goroutines.
func TestTenThousandStalledConnectionsFromManySources(t *testing.T) {
	hardening.Long(t)
	const sources, perSource = 200, 50
	const authTimeout = 5 * time.Second
	v := startVariant(t, func(cfg string) string {
		return cfg + "\nssh:\n  auth_timeout: 5s\n"
	})
	addr := net.JoinHostPort("127.0.0.1", v.port)
	kexinit := kexInitPacket()

	type outcome struct {
		banner bool          // sekisho sent its banner before closing
		after  time.Duration // from the dial to sekisho closing it
		err    error         // neither closed nor served in time
	}
	results := make([]outcome, sources*perSource)
	var wg sync.WaitGroup
	var open atomic.Int64
	dials := make(chan int)
	floodStart := time.Now()
	var dialWG sync.WaitGroup
	for range 64 {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			for i := range dials {
				src := net.IPv4(127, 1, byte(i%sources/250), byte(1+i%sources%250))
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
				began := time.Now()
				c, err := d.Dial("tcp", addr)
				if err != nil {
					results[i].err = fmt.Errorf("dial from %s: %w", src, err)
					continue
				}
				open.Add(1)
				c.Write([]byte("SSH-2.0-stalled\r\n"))
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer open.Add(-1)
					defer c.Close()
					c.SetReadDeadline(time.Now().Add(authTimeout + time.Minute))
					r := bufio.NewReader(c)
					line, err := r.ReadString('\n')
					if strings.HasPrefix(line, "SSH-2.0-") {
						results[i].banner = true
						if i%2 == 1 {
							c.Write(kexinit) // and then nothing
						}
						_, err = r.WriteTo(discard{})
						if err == nil {
							err = errClosed
						}
					}
					if isTimeout(err) {
						results[i].err = fmt.Errorf("connection %d from %s still open %s after its dial", i, src, time.Since(began).Round(time.Second))
						return
					}
					results[i].after = time.Since(began)
				}()
			}
		}()
	}

	// A technician logs in from 127.0.0.1 again and again meanwhile.
	var logins []time.Duration
	var loginErr error
	stop := make(chan struct{})
	loginsDone := make(chan struct{})
	go func() {
		defer close(loginsDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			began := time.Now()
			cmd := v.ssh(ctx, "aiko", "aiko+db-jp-01", "echo", "served")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			cancel()
			if err != nil || strings.TrimSpace(string(out)) != "served" {
				loginErr = fmt.Errorf("login %d during the flood: %v, stdout %q, stderr %q", len(logins)+1, err, out, stderr.String())
				return
			}
			logins = append(logins, time.Since(began))
		}
	}()

	for i := range results {
		dials <- i
	}
	close(dials)
	dialWG.Wait()
	dialled := time.Since(floodStart)
	var peakOpen int64
	waitUntil(t, authTimeout+2*time.Minute, "every stalled connection to be closed by sekisho", func() bool {
		peakOpen = max(peakOpen, open.Load())
		return open.Load() == 0
	})
	wg.Wait()
	allClosed := time.Since(floodStart)
	close(stop)
	<-loginsDone
	if loginErr != nil {
		t.Fatal(loginErr)
	}
	if len(logins) < 3 {
		t.Fatalf("only %d logins completed during the flood", len(logins))
	}

	banners, held, slowest := 0, 0, time.Duration(0)
	for _, r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.banner {
			banners++
		}
		if r.after >= authTimeout-time.Second {
			held++
		}
		slowest = max(slowest, r.after)
	}
	if slowest > authTimeout+5*time.Second {
		t.Fatalf("a stalled connection was held %s; ssh.auth_timeout is %s", slowest, authTimeout)
	}

	// Refusals are audited per source and window: at most a few rows per
	// source, not one per connection.
	audited := 0
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && strings.HasPrefix(e["source"], "127.1.") {
			audited++
		}
	}
	if audited == 0 || audited > sources*4 {
		t.Fatalf("%d refusals audited for %d refused or closed connections from %d sources; want at least one and at most a few per source", audited, len(results)-banners, sources)
	}

	rss := peakRSS(t, v)
	sort.Slice(logins, func(i, j int) bool { return logins[i] < logins[j] })
	hardening.Report(t, "21",
		"%d connections from %d sources (half banner-only, half stopped mid key exchange), dialled in %.1f s: %d got a banner, %d of them held until ssh.auth_timeout (5 s); the rest were refused before the banner or closed to make room; all closed by sekisho %.1f s after the first dial, none held longer than %.1f s; %d refusals audited; %d technician logins meanwhile, all served (median %.2f s, slowest %.2f s); sekisho's peak RSS %d MiB",
		len(results), sources, dialled.Seconds(), banners, held, allClosed.Seconds(), slowest.Seconds(), audited,
		len(logins), logins[len(logins)/2].Seconds(), logins[len(logins)-1].Seconds(), rss>>20)
}

var errClosed = fmt.Errorf("closed by sekisho")

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// peakRSS is the variant server's peak resident set size in bytes.
func peakRSS(t testing.TB, v *variant) int64 {
	t.Helper()
	return procStatus(t, v, "VmHWM:")
}

// procStatus is a size in bytes from the variant server's /proc status.
func procStatus(t testing.TB, v *variant, field string) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(variantPID(t, v)) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/pid/status", field)
	return 0
}
