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

// legacyVariant runs sekisho with three rules on web-sg-01: li may upload
// into up with scp -O and rsync too (legacy_transfers), aiko may download
// with them, wei may upload into up over SFTP only.
func legacyVariant(t *testing.T, up string) *variant {
	t.Helper()
	return startVariant(t, func(cfg string) string {
		rules := "  - name: uploads-legacy\n    effect: allow\n    targets: [web-sg-01]\n    technicians: [li]\n" +
			"    channels: [scp, sftp]\n    files: upload_only\n    upload_to: [" + up + "]\n    legacy_transfers: [scp, rsync]\n" +
			"  - name: downloads-legacy\n    effect: allow\n    targets: [web-sg-01]\n    technicians: [aiko]\n" +
			"    channels: [scp, sftp]\n    files: download_only\n    legacy_transfers: [scp, rsync]\n" +
			"  - name: uploads-sftp-only\n    effect: allow\n    targets: [web-sg-01]\n    technicians: [wei]\n" +
			"    channels: [scp, sftp]\n    files: upload_only\n    upload_to: [" + up + "]\n"
		old := "  - name: any-affiliate-to-web\n    effect: allow\n    targets: [web-sg-01]\n"
		if !strings.Contains(cfg, old) {
			t.Fatal("the test rules have no any-affiliate-to-web rule to replace")
		}
		return strings.Replace(cfg, old, rules, 1)
	})
}

// transferClients runs stock rsync and OpenSSH scp through a variant.
type transferClients struct {
	t *testing.T
	v *variant
}

// sshOptions are the variant's ssh options for tech, without -p PORT and
// the destination.
func (c transferClients) sshOptions(tech string) []string {
	args := c.v.ssh(ctxT(c.t), tech, "x").Args
	return args[1 : len(args)-3]
}

func (c transferClients) rsync(tech string, args ...string) result {
	rsh := "ssh " + strings.Join(append(c.sshOptions(tech), "-p", c.v.port), " ")
	return run(c.t, exec.CommandContext(ctxT(c.t), "rsync", append([]string{"-e", rsh}, args...)...), nil)
}

// scp runs scp; legacy adds -O (the rcp protocol, run as a command).
func (c transferClients) scp(tech string, legacy bool, args ...string) result {
	opts := append(c.sshOptions(tech), "-P", c.v.port)
	if legacy {
		opts = append(opts, "-O")
	}
	return run(c.t, exec.CommandContext(ctxT(c.t), "scp", append(opts, args...)...), nil)
}

func TestLegacyTransfersUnderDirectionLimits(t *testing.T) {
	t.Parallel()
	up, secrets, local := t.TempDir(), t.TempDir(), t.TempDir()
	v := legacyVariant(t, up)
	c := transferClients{t, v}
	const host = "@127.0.0.1:"

	// What the target holds that no upload may show: a file of secret
	// lines, a key in a directory, and a file in the upload directory.
	secret := filepath.Join(secrets, "target-secret.txt")
	os.WriteFile(secret, []byte("TOPSECRET-line-1\nTOPSECRET-line-2\n"), 0o600)
	os.Mkdir(filepath.Join(secrets, "sub"), 0o700)
	os.WriteFile(filepath.Join(secrets, "sub", "planted-key.pem"), []byte("TOPSECRET-key\n"), 0o600)
	os.WriteFile(filepath.Join(up, "planted-in-upload-dir.txt"), []byte("TOPSECRET-upload-dir\n"), 0o600)
	leaked := func(what string, r result) {
		t.Helper()
		if out := r.stdout + r.stderr; strings.Contains(out, "TOPSECRET") || strings.Contains(out, "planted") {
			t.Errorf("%s: the target's files came back: stdout %q, stderr %q", what, r.stdout, r.stderr)
		}
	}
	empty := filepath.Join(local, "empty")
	os.Mkdir(empty, 0o700)
	data := make([]byte, 96<<10)
	rand.Read(data)
	src := filepath.Join(local, "upload.bin")
	os.WriteFile(src, data, 0o600)

	// Refused, each with a message naming what, and audited with it.
	refusals := 0
	refused := func(what string, r result, want string) {
		t.Helper()
		refusals++
		leaked(what, r)
		if r.code == 0 || !strings.Contains(r.stderr, "sekisho: ") || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: exit %d, stderr %q; want refused with %q", what, r.code, r.stderr, want)
		}
	}
	const (
		upRule   = `under rule "uploads-legacy"`
		downRule = `under rule "downloads-legacy"`
	)
	// rsync -s: the options and paths go over the connection, where the
	// target's rsync would read --files-from and send the file's lines
	// back as names, or --sender and send what it holds.
	r := c.rsync("li", "-s", "-W", "--files-from=:"+secret, empty+"/", "li+web-sg-01"+host+up+"/")
	refused("rsync -s --files-from=:FILE", r, "rsync option -s (--secluded-args) is refused "+upRule)
	r = c.rsync("li", "--secluded-args", "-rW", "-M--sender", empty+"/", "li+web-sg-01"+host+up+"/")
	refused("rsync --secluded-args with --sender smuggled", r, "rsync option -s (--secluded-args) is refused "+upRule)
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("rsync with a smuggled --sender brought %d files", len(entries))
	}
	// Without -s: --files-from reads a file of the target's, a dry run
	// with --delete lists a directory, files outside the upload directory.
	r = c.rsync("li", "-W", "--files-from=:"+secret, empty+"/", "li+web-sg-01"+host+up+"/")
	refused("rsync --files-from=:FILE", r, "rsync option --files-from is refused "+upRule+": it has the target read a file of its own")
	r = c.rsync("li", "-rvn", "--delete", empty+"/", "li+web-sg-01"+host+secrets+"/")
	refused("rsync -rvn --delete (a listing)", r, "rsync option --delete is refused "+upRule)
	r = c.rsync("li", "-rvnW", "--delete", empty+"/", "li+web-sg-01"+host+up+"/")
	refused("rsync -rvn --delete (a listing of the upload directory)", r, "rsync option --delete is refused "+upRule)
	r = c.rsync("li", "-rvnW", empty+"/", "li+web-sg-01"+host+up+"/")
	refused("rsync -rvn (a dry run)", r, "rsync option -n (--dry-run) is refused "+upRule)
	if _, err := os.Stat(filepath.Join(up, "planted-in-upload-dir.txt")); err != nil {
		t.Errorf("the upload directory's file is gone: %v", err)
	}
	r = c.rsync("li", "-rW", "--remove-source-files", src, "li+web-sg-01"+host+up+"/")
	refused("rsync --remove-source-files (upload)", r, "rsync option --remove-source-files is refused "+upRule)
	r = c.rsync("li", "-a", src, "li+web-sg-01"+host+up+"/")
	refused("rsync -a (symbolic links)", r, "rsync option -l (--links) is refused "+upRule)
	before, _ := os.Stat(up)
	r = c.rsync("li", "-rtpW", empty+"/", "li+web-sg-01"+host+up+"/")
	refused("rsync -p into the upload directory itself", r, "rsync option -p (--perms) into "+up+" itself is refused "+upRule)
	if after, _ := os.Stat(up); after.Mode() != before.Mode() {
		t.Errorf("the upload directory's mode went from %v to %v", before.Mode(), after.Mode())
	}
	r = c.rsync("li", "-rtW", src, "li+web-sg-01"+host+secrets+"/")
	refused("rsync to a directory outside upload_to", r, `rsync destination "`+secrets+`/" is refused `+upRule+": uploads land inside "+up+" only")
	r = c.rsync("li", "-rtW", src, "li+web-sg-01"+host+up+"/../"+filepath.Base(secrets)+"/")
	refused("rsync with .. out of upload_to", r, "give a path inside "+up+" without ..")
	r = c.scp("li", true, src, "li+web-sg-01"+host+up+"/../x.bin")
	refused("scp -O with .. out of upload_to", r, `scp -O destination "`+up+`/../x.bin" is refused `+upRule+": give a path inside "+up+" without ..")
	r = c.scp("li", true, src, "li+web-sg-01"+host+"x.bin")
	refused("scp -O to a relative path", r, `scp -O destination "x.bin" is refused `+upRule+": a relative path depends on the login's home; give an absolute path inside "+up)
	r = c.scp("li", true, "li+web-sg-01"+host+secret, filepath.Join(local, "down.txt"))
	refused("scp -O download under upload_only", r, "only uploads to web-sg-01 are allowed "+upRule+"; this scp -O downloads")
	for _, p := range []string{filepath.Join(filepath.Dir(up), "x.bin"), filepath.Join(secrets, "upload.bin"), filepath.Join(local, "down.txt")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was written", p)
		}
	}
	// A download under download_only must not delete what it sends.
	r = c.rsync("aiko", "-r", "--remove-source-files", "aiko+web-sg-01"+host+secrets+"/", filepath.Join(local, "got")+"/")
	refused("rsync --remove-source-files (download)", r, "rsync option --remove-source-files is refused "+downRule+": it deletes files on the target")
	r = c.rsync("aiko", "-s", "aiko+web-sg-01"+host+secrets+"/", filepath.Join(local, "got")+"/")
	refused("rsync -s (download)", r, "rsync option -s (--secluded-args) is refused "+downRule)
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("the target's file is gone: %v", err)
	}

	// Without legacy_transfers: SFTP only, and scp without -O speaks it.
	r = c.rsync("wei", "-rtW", src, "wei+web-sg-01"+host+up+"/")
	refused("rsync without legacy_transfers", r, `rsync is not allowed on web-sg-01 under rule "uploads-sftp-only": uploads there go over SFTP only (sftp, or scp without -O)`)
	r = c.scp("wei", true, src, "wei+web-sg-01"+host+up+"/")
	refused("scp -O without legacy_transfers", r, `scp -O is not allowed on web-sg-01 under rule "uploads-sftp-only": uploads there go over SFTP only (sftp, or scp without -O)`)
	if r := c.scp("wei", false, src, "wei+web-sg-01"+host+up+"/wei.bin"); r.code != 0 {
		t.Errorf("scp (sftp) under uploads-sftp-only: exit %d: %s", r.code, r.stderr)
	} else if got, _ := os.ReadFile(filepath.Join(up, "wei.bin")); !bytes.Equal(got, data) {
		t.Error("the scp (sftp) upload did not arrive intact")
	}

	// Plain transfers go through, and their bytes arrive.
	if r := c.rsync("li", "-rtW", src, "li+web-sg-01"+host+up+"/"); r.code != 0 {
		t.Errorf("rsync -rtW upload: exit %d: %s", r.code, r.stderr)
	} else if got, _ := os.ReadFile(filepath.Join(up, "upload.bin")); !bytes.Equal(got, data) {
		t.Error("the rsync upload did not arrive intact")
	}
	if r := c.scp("li", true, src, "li+web-sg-01"+host+up+"/scp-O.bin"); r.code != 0 {
		t.Errorf("scp -O upload: exit %d: %s", r.code, r.stderr)
	} else if got, _ := os.ReadFile(filepath.Join(up, "scp-O.bin")); !bytes.Equal(got, data) {
		t.Error("the scp -O upload did not arrive intact")
	}
	got := filepath.Join(local, "downloaded.bin")
	if r := c.rsync("aiko", "-t", "aiko+web-sg-01"+host+filepath.Join(up, "upload.bin"), got); r.code != 0 {
		t.Errorf("rsync download under download_only: exit %d: %s", r.code, r.stderr)
	} else if b, _ := os.ReadFile(got); !bytes.Equal(b, data) {
		t.Error("the rsync download did not arrive intact")
	}

	// Every refusal is audited with what was refused.
	var audited int
	events := v.audit(t)
	for _, want := range []string{"-s (--secluded-args)", "--files-from is refused", "--delete is refused", "-n (--dry-run)",
		"--remove-source-files is refused " + upRule, "-l (--links)", `rsync destination "` + secrets + `/"`,
		"without ..", `scp -O destination "x.bin"`, "this scp -O downloads", "--remove-source-files is refused " + downRule,
		`rsync is not allowed on web-sg-01 under rule "uploads-sftp-only"`, `scp -O is not allowed on web-sg-01`} {
		found := false
		for _, e := range events {
			found = found || e["kind"] == "refused" && strings.Contains(e["detail"], want)
		}
		if !found {
			t.Errorf("no refused audit event names %s", want)
			continue
		}
		audited++
	}
	hardening.Report(t, "32", "stock rsync and OpenSSH scp -O under upload_only and download_only rules: without legacy_transfers both refused (SFTP only, scp without -O worked); with them, %d attacks refused naming the option or path (rsync -s with --files-from=:FILE and with --sender smuggled, --files-from, -n --delete listings of a directory and of the upload directory, a dry run, --remove-source-files up and down, -a's links, -p onto the upload directory itself, a destination outside upload_to, .. out of it, a relative one, a download under upload_only), nothing of the target's planted files in any output, %d refusals found in the audit log with what was refused; rsync -rtW and scp -O uploads and an rsync download arrived intact (%d bytes)", refusals, audited, len(data))
}
