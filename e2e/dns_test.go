package e2e

import (
	"bufio"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/sekisho/sekisho/internal/hardening"
)

// flipDNS is a DNS server on loopback whose A answer for one name changes
// after every query, as a name under an attacker's control could.
type flipDNS struct {
	conn    *net.UDPConn
	mu      sync.Mutex
	answers [][4]byte
	queries int
}

func startFlipDNS(t *testing.T, name string, answers ...[4]byte) *flipDNS {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &flipDNS{conn: c, answers: answers}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if q.Type == dnsmessage.TypeA && strings.EqualFold(q.Name.String(), name+".") {
				d.mu.Lock()
				a := d.answers[min(d.queries, len(d.answers)-1)]
				d.queries++
				d.mu.Unlock()
				b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}, dnsmessage.AResource{A: a})
			}
			msg, err := b.Finish()
			if err == nil {
				c.WriteToUDP(msg, from)
			}
		}
	}()
	return d
}

func (d *flipDNS) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries
}

func TestForwardToANameWhoseAnswerChanges(t *testing.T) {
	t.Parallel()
	_, dbPort, _ := net.SplitHostPort(targetNamed(t, "db-jp-01").Address)
	// First answer: the target's own loopback, which the rule names by
	// address; every later answer: the metadata service.
	dns := startFlipDNS(t, "flip.test", [4]byte{127, 0, 0, 1}, [4]byte{169, 254, 169, 254})
	v := startVariant(t, func(cfg string) string {
		cfg = strings.Replace(cfg, "\nnetworks:", "\nforward_resolver: "+dns.conn.LocalAddr().String()+"\n\nnetworks:", 1)
		return strings.Replace(cfg, "    when: '\"pii\" in target.data && !cross_border'\n",
			"    when: '\"pii\" in target.data && !cross_border'\n    channels: [exec, port_forward]\n    forward_to: [\"flip.test:"+dbPort+"\", \"127.0.0.1:"+dbPort+"\"]\n", 1)
	})
	// ssh -W flip.test:PORT: sekisho resolves the name once, checks the
	// answer and has the target connect to that address. The target never
	// sees the name (it could not resolve it), so the banner proves it.
	w := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01")
	w.Args = append(w.Args[:1], append([]string{"-W", "flip.test:" + dbPort}, w.Args[1:]...)...)
	stdout, _ := w.StdoutPipe()
	var stderr syncBuffer
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	banner := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		banner <- line
	}()
	select {
	case line := <-banner:
		if !strings.HasPrefix(line, "SSH-2.0-OpenSSH") {
			t.Errorf("through the forward: %q (stderr %q)", line, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("no banner through the forward (stderr %q)", stderr.String())
	}
	w.Process.Kill()
	w.Wait()
	if n := dns.count(); n != 1 {
		t.Errorf("the name was looked up %d times for one forward, want once", n)
	}
	// The next lookup answers the metadata address: refused.
	r := run(t, func() *exec.Cmd {
		c := v.ssh(ctxT(t), "aiko", "aiko+db-jp-01")
		c.Args = append(c.Args[:1], append([]string{"-W", "flip.test:" + dbPort}, c.Args[1:]...)...)
		return c
	}(), nil)
	if r.code == 0 || !strings.Contains(r.stderr, "port forwarding refused") {
		t.Errorf("after the answer changed: exit %d, stderr %q", r.code, r.stderr)
	}
	hardening.Report(t, "31", "ssh -W to a name whose DNS answer flips from 127.0.0.1 to 169.254.169.254 after each query: the first forward looked the name up once and reached the checked address; the next, answered with the metadata address, refused")
}
