package e2e

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// TestTransfersOnAForcedTerminalGetNone: ssh -tt before scp -t was the
// way to a login shell that reads its rc files on a terminal. Under a rule
// that opts in to scp -O and rsync, a client that forces a terminal still
// gets none for them: scp's protocol typed into ssh -tt arrives without an
// echo, and rsync over ssh -tt copies binary data intact, both of which a
// terminal on the target would mangle. Two things hold it: sekisho
// withholds the pty-req, and the certificate of a rule without a shell or
// a command has no permit-pty, so the target would refuse one anyway.
func TestTransfersOnAForcedTerminalGetNone(t *testing.T) {
	t.Parallel()
	up, local := t.TempDir(), t.TempDir()
	v := legacyVariant(t, up)
	c := transferClients{t, v}

	// scp's sink protocol by hand, as the attack ran it: a file
	// header, the content and its end marker; the target answers each
	// with a zero byte. A terminal would echo the header back.
	in := []byte("C0644 11 typed.txt\nhello world\x00")
	r := run(t, v.ssh(ctxT(t), "li", "li+web-sg-01", "-tt", "scp -t "+up+"/"), in)
	if got, _ := os.ReadFile(filepath.Join(up, "typed.txt")); string(got) != "hello world" {
		t.Errorf("ssh -tt 'scp -t': the file holds %q; exit %d, stdout %q, stderr %q", got, r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout, "C0644") || strings.Trim(r.stdout, "\x00") != "" {
		t.Errorf("ssh -tt 'scp -t': stdout %q, want only the target's zero-byte answers (a terminal echoes)", r.stdout)
	}

	// rsync over ssh -tt: every byte value, which a terminal's line
	// discipline would translate or swallow.
	data := make([]byte, 256<<10)
	rand.Read(data)
	for i := range 256 {
		data[i] = byte(i)
	}
	src := filepath.Join(local, "binary.dat")
	os.WriteFile(src, data, 0o600)
	// -e none: with a terminal asked for, ssh reads "~." after a newline
	// in the data as its own escape and hangs up.
	rsh := "ssh -tt -e none " + strings.Join(append(c.sshOptions("li"), "-p", v.port), " ")
	r = run(t, exec.CommandContext(ctxT(t), "rsync", "-rtW", "-e", rsh, src, "li+web-sg-01@127.0.0.1:"+up+"/"), nil)
	if got, _ := os.ReadFile(filepath.Join(up, "binary.dat")); !bytes.Equal(got, data) {
		t.Errorf("rsync -e 'ssh -tt': %d of %d bytes arrived intact; exit %d, stderr %q", len(got), len(data), r.code, r.stderr)
	}
	hardening.Report(t, "32", "ssh -tt with scp -t typed by hand, and rsync -e 'ssh -tt' with all 256 byte values: the target got no terminal (no echo; %d bytes intact)", len(data))
}
