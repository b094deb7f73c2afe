package e2e

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

// Under files: upload_only with upload_to, stock OpenSSH sftp and scp
// (SFTP mode, OpenSSH 9's default) put files into the upload directory,
// and everything that would write elsewhere, look around outside it, read
// a file or make a link is refused by sekisho with a message, audited,
// and never reaches the target. The target is this machine, and its login
// this user: what lands is checked on the local disk.
func TestUploadsLandOnlyInUploadDirs(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("/tmp", "sekisho-e2e-upload-to-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "    targets: [web-sg-01]\n",
			"    targets: [web-sg-01]\n    channels: [sftp]\n    files: upload_only\n    upload_to: ["+dir+"]\n", 1)
	})
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	home := me.HomeDir

	local := t.TempDir()
	data := make([]byte, 64<<10)
	rand.Read(data)
	src := filepath.Join(local, "up.bin")
	os.WriteFile(src, data, 0o600)
	tree := filepath.Join(local, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o700)
	os.WriteFile(filepath.Join(tree, "a.bin"), data[:1000], 0o600)
	os.WriteFile(filepath.Join(tree, "sub", "b.bin"), data[1000:], 0o600)

	opts := v.ssh(ctxT(t), "li", "x").Args[1:]
	opts = opts[:len(opts)-3] // without -p PORT and the destination
	const login = "li+web-sg-01@127.0.0.1"
	sftp := func(batch string) result {
		cmd := exec.CommandContext(ctxT(t), "sftp", append(append(opts, "-P", v.port, "-b", "-"), login)...)
		return run(t, cmd, []byte(batch))
	}
	scp := func(args ...string) result {
		return run(t, exec.CommandContext(ctxT(t), "scp", append(append(opts, "-P", v.port), args...)...), nil)
	}
	sameAs := func(p string, want []byte) bool {
		got, err := os.ReadFile(p)
		return err == nil && bytes.Equal(got, want)
	}

	// Into the upload directory: put, put -r, mkdir, rename inside it,
	// listing it.
	r := sftp("put " + src + " " + dir + "/up.bin\nmkdir " + dir + "/made\nput -r " + tree + " " + dir + "/made/\n" +
		"put " + src + " " + dir + "/moving.bin\nrename " + dir + "/moving.bin " + dir + "/moved.bin\nls -l " + dir + "\n")
	if r.code != 0 || !strings.Contains(r.stdout, "up.bin") || !strings.Contains(r.stdout, "moved.bin") {
		t.Fatalf("sftp into %s: exit %d, stdout %q, stderr %q", dir, r.code, r.stdout, r.stderr)
	}
	for p, want := range map[string][]byte{"up.bin": data, "moved.bin": data, "made/tree/a.bin": data[:1000], "made/tree/sub/b.bin": data[1000:]} {
		if !sameAs(filepath.Join(dir, p), want) {
			t.Errorf("sftp upload of %s did not arrive intact", p)
		}
	}
	os.WriteFile(filepath.Join(local, "scp.bin"), data, 0o600)
	if r := scp(filepath.Join(local, "scp.bin"), login+":"+dir+"/"); r.code != 0 || !sameAs(filepath.Join(dir, "scp.bin"), data) {
		t.Errorf("scp into %s/: exit %d, stderr %q", dir, r.code, r.stderr)
	}
	if r := scp("-r", tree, login+":"+dir+"/"); r.code != 0 || !sameAs(filepath.Join(dir, "tree", "sub", "b.bin"), data[1000:]) {
		t.Errorf("scp -r into %s/: exit %d, stderr %q", dir, r.code, r.stderr)
	}

	// Everything else is refused with a message naming the path, and
	// nothing lands. The login's ~/.bashrc (run by the next login's
	// shell) is put back should the test fail.
	bashrc := filepath.Join(home, ".bashrc")
	before, bashrcErr := os.ReadFile(bashrc)
	t.Cleanup(func() {
		if after, err := os.ReadFile(bashrc); bashrcErr == nil && (err != nil || !bytes.Equal(after, before)) {
			os.WriteFile(bashrc, before, 0o644)
		} else if bashrcErr != nil && err == nil {
			os.Remove(bashrc)
		}
	})
	hex := randHex(t)
	escape := "/tmp/sekisho-e2e-escape-" + hex
	inEtc := "/etc/sekisho-e2e-" + hex
	elsewhere := "/tmp/sekisho-e2e-elsewhere-" + hex
	relative := "sekisho-e2e-relative-" + hex
	for _, p := range []string{escape, inEtc, elsewhere, filepath.Join(home, relative)} {
		t.Cleanup(func() { os.Remove(p) })
	}
	uploads := "uploads may only go into " + dir + "; "
	looked := "uploads may only go into " + dir + ", and files may be looked at only there; "
	refusals := []struct {
		what   string
		run    func() result
		reason string // what sekisho says, on stderr and in the audit
		absent string // a path that must not exist after
	}{
		{"sftp put x .bashrc", func() result { return sftp("put " + src + " .bashrc\n") },
			uploads + bashrc + " is outside it", ""},
		{"sftp put x " + inEtc, func() result { return sftp("put " + src + " " + inEtc + "\n") },
			uploads + inEtc + " is outside it", inEtc},
		{"sftp put x DIR/../", func() result { return sftp("put " + src + " " + dir + "/../" + filepath.Base(escape) + "\n") },
			uploads + escape + " is outside it", escape},
		{"sftp ls /", func() result { return sftp("ls /\n") }, looked + "/ is outside it", ""},
		{"sftp ls /etc", func() result { return sftp("ls /etc\n") }, looked + "/etc is outside it", ""},
		{"sftp cd /etc", func() result { return sftp("cd /etc\n") }, looked + "/etc is outside it", ""},
		{"sftp get", func() result { return sftp("get " + dir + "/up.bin " + filepath.Join(local, "got.bin") + "\n") },
			"only uploads are allowed: opening " + dir + "/up.bin for reading is refused", filepath.Join(local, "got.bin")},
		{"sftp symlink", func() result { return sftp("symlink /etc/passwd " + dir + "/link\n") },
			"uploads may not make symbolic links (" + dir + "/link)", dir + "/link"},
		{"sftp ln (a hard link to a file outside)", func() result { return sftp("ln /etc/passwd " + dir + "/pw\n") },
			uploads + "/etc/passwd is outside it", dir + "/pw"},
		{"sftp rename out of the directory", func() result { return sftp("rename " + dir + "/up.bin " + elsewhere + "\n") },
			uploads + elsewhere + " is outside it", elsewhere},
		{"scp to another directory", func() result { return scp(src, login+":"+elsewhere) },
			uploads + elsewhere + " is outside it", elsewhere},
		{"scp to a relative path", func() result { return scp(src, login+":"+relative) },
			uploads + relative + " is relative, and sekisho does not know the login's home yet: give an absolute path", filepath.Join(home, relative)},
	}
	for _, c := range refusals {
		r := c.run()
		if r.code == 0 || !strings.Contains(r.stderr, "sekisho: "+c.reason) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want sekisho: %s", c.what, r.code, r.stdout, r.stderr, c.reason)
		}
		if c.absent != "" {
			if _, err := os.Lstat(c.absent); err == nil {
				t.Errorf("%s: %s exists", c.what, c.absent)
			}
		}
	}
	if after, err := os.ReadFile(bashrc); (err == nil) != (bashrcErr == nil) || !bytes.Equal(after, before) {
		t.Errorf("sftp put x .bashrc changed %s", bashrc)
	}
	if !sameAs(filepath.Join(dir, "up.bin"), data) {
		t.Error("the file renamed out of the directory is gone from it")
	}

	audited := map[string]bool{}
	for _, e := range v.audit(t) {
		if e["kind"] == "refused" && e["technician"] == "li" {
			audited[e["detail"]] = true
		}
	}
	for _, c := range refusals {
		if !audited["sftp request refused: "+c.reason] {
			t.Errorf("%s: no audit event %q", c.what, "sftp request refused: "+c.reason)
		}
	}
	hardening.Report(t, "32", "under files: upload_only with upload_to [a directory in /tmp], stock OpenSSH sftp and scp (SFTP mode): put, put -r, mkdir, rename and ls inside it, scp and scp -r into it: %d-byte files intact; %d attempts refused by sekisho with the path in the message and the audit, nothing landing: put to ~/.bashrc, to /etc, through DIR/.., ls / and /etc, cd /etc, get, symlink, a hard link to /etc/passwd, rename out of the directory, scp to another directory and to a relative path", len(data), len(refusals))
}
