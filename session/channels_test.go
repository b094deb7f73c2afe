package session

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/broker"
)

func TestChannelKind(t *testing.T) {
	tests := []struct {
		typ, cmd         string
		kind             string
		upload, download bool
	}{
		{"shell", "", "shell", false, false},
		{"subsystem", "sftp", "sftp", true, true},
		{"exec", "uname -a", "exec", false, false},
		{"exec", "scp -t /tmp/x", "scp", true, false},
		{"exec", "scp -v -d -t -- /tmp/", "scp", true, false},
		{"exec", "/usr/bin/scp -r -p -f /etc", "scp", false, true},
		{"exec", "scp -f -- /etc/hosts", "scp", false, true},
		{"exec", "scp /tmp/x", "exec", false, false},
		{"exec", "scp -t '-f' /etc/shadow", "exec", false, false},
		{"exec", `scp -t \-f x`, "exec", false, false},
		{"exec", "./scp -t /tmp/x", "exec", false, false},
		{"exec", "/tmp/scp -t /tmp/x", "exec", false, false},
		{"exec", "scp -t -f /tmp/x", "exec", false, false},
		{"exec", "scp -t -o ProxyCommand=x /tmp/x", "exec", false, false},
		{"exec", "scp -t", "exec", false, false},
		{"exec", "rsync --server --daemon .", "exec", false, false},
		{"exec", "rsync --server --sender --remove-source-files . /x", "exec", false, false},
		{"exec", "rsync --server --config=/tmp/r.conf . /x", "exec", false, false},
		{"exec", "rsync --server '--sender' . /x", "exec", false, false},
		{"exec", "scp -t /tmp/x; bash", "exec", false, false},
		// fish reads \' inside single quotes as a quote and \x2e as a dot.
		{"exec", `scp -t '/tmp/x\'a' ; cat /etc/shadow #'`, "exec", false, false},
		{"exec", `scp -t /tmp/\x2e\x2e/etc/cron.d/x`, "exec", false, false},
		{"exec", `scp -t /tmp/\n`, "exec", false, false},
		{"exec", `scp -t /tmp/a\ b`, "scp", true, false},
		// zsh expands a word starting with = to a command's path.
		{"exec", "scp -t =scp", "exec", false, false},
		{"exec", "scp -f $(cat /etc/shadow)", "exec", false, false},
		{"exec", "scp -t x && curl evil", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu . /tmp/x/", "scp", true, false},
		{"exec", "rsync --server --sender -vlogDtpre.iLsfxCIvu . /tmp/x/", "scp", false, true},
		{"exec", "rsync -a /a /b", "exec", false, false},
		{"exec", "", "exec", false, false},
		// Paths quoted or escaped as scp users and rsync write them.
		{"exec", "scp -t '/tmp/a b/'", "scp", true, false},
		{"exec", `scp -f /tmp/a\ b.txt`, "scp", false, true},
		{"exec", `rsync --server -logDtpre.iLsfxCIvu . /tmp/dir\ with\ space/`, "scp", true, false},
		{"exec", `rsync --server --sender -logDtpre.iLsfxCIvu . /tmp/it\'s\ here.txt`, "scp", false, true},
		{"exec", "scp -t /tmp/日本語/", "scp", true, false},
		{"exec", "rsync --server -vWtre.iLsfxCIvu --log-format=%i . /tmp/x/", "scp", true, false}, // rsync -i
		{"exec", "scp -t %1", "exec", false, false},                                               // a job or process to csh and fish
		// Flags in quotes, and quoting that is not literal everywhere.
		{"exec", `rsync --server \--sender . /x`, "exec", false, false},
		{"exec", "'scp' -t /tmp/x", "exec", false, false},
		{"exec", `scp -t "/tmp/a b"`, "exec", false, false},
		{"exec", "scp -t '/tmp/$(id)'", "scp", true, false}, // literal in single quotes
		{"exec", "scp -t '/tmp/a!b'", "exec", false, false},
		{"exec", "scp -t '/tmp/x", "exec", false, false},
		{"exec", `scp -t /tmp/x\`, "exec", false, false},
		{"exec", "scp -t /tmp/x\\\n", "exec", false, false},
		{"exec", "scp -t ~/x", "exec", false, false},
		{"exec", "scp -t /tmp/*", "exec", false, false},
		{"exec", "scp\t-t /tmp/x", "exec", false, false},
		{"exec", "scp -t /tmp/x\u3000y", "exec", false, false},
		{"exec", "scp -t '/tmp/\u202ex'", "exec", false, false},
		// An rsync upload that has the target read other files is a command.
		{"exec", "rsync --server -vlogDtpRe.LsfxCIvu --files-from /etc/hosts . /tmp/x/", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu --files-from=/etc/hosts . /tmp/x/", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu --compare-dest /etc . /tmp/x/", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu --link-dest=/root . /tmp/x/", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu --exclude-from /etc/shadow . /tmp/x/", "exec", false, false},
		{"exec", "rsync --server -vlyogDtpre.iLsfxCIvu . /tmp/x/", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu --write-batch=/tmp/b . /tmp/x/", "exec", false, false},
		// ... but a download may read a list of files on the target.
		{"exec", "rsync --server --sender -vlogDtpRe.LsfxCIvu --files-from /tmp/list . /srv/", "scp", false, true},
		{"exec", "rsync --server -vlWogDtpre.iLsfxCIvu . /tmp/x/", "scp", true, false},
	}
	for _, tt := range tests {
		kind, up, down := channelKind(tt.typ, tt.cmd)
		if kind != tt.kind || up != tt.upload || down != tt.download {
			t.Errorf("channelKind(%q, %q) = %s up=%v down=%v; want %s up=%v down=%v", tt.typ, tt.cmd, kind, up, down, tt.kind, tt.upload, tt.download)
		}
	}
}

func TestCheckLimits(t *testing.T) {
	d := func(l broker.Limits) broker.Decision {
		return broker.Decision{Effect: broker.Allow, Rule: "r", Limits: l}
	}
	tests := []struct {
		limits   broker.Limits
		typ, cmd string
		want     string // "" allowed, else a part of the refusal
	}{
		{broker.Limits{}, "shell", "", ""},
		{broker.Limits{}, "exec", "uname", ""},
		{broker.Limits{Channels: []string{"exec"}}, "shell", "", `shell is not allowed on db under rule "r"`},
		{broker.Limits{Channels: []string{"shell"}}, "exec", "scp -t x; bash", "exec is not allowed"},
		{broker.Limits{Channels: []string{"shell", "scp"}}, "exec", "scp -t /tmp/x", ""},
		{broker.Limits{Files: broker.FilesNone}, "subsystem", "sftp", "file transfers are not allowed"},
		{broker.Limits{Files: broker.FilesUpload}, "exec", "scp -f /etc/passwd", "only uploads"},
		{broker.Limits{Files: broker.FilesUpload}, "subsystem", "sftp", ""}, // checked request by request
		{broker.Limits{Files: broker.FilesDownload}, "exec", "rsync --server . /x", "only downloads"},
		// Without a direction limit, scp -O and rsync are the scp channel
		// when literal; a receiving rsync that reads other files is a
		// command.
		{broker.Limits{Channels: []string{"scp"}}, "exec", "rsync --server -vlogDtpre.iLsfxCIvu . /x", ""},
		{broker.Limits{Channels: []string{"scp"}}, "exec", "rsync --server -sWRe.LsfxCIvu", ""},
		{broker.Limits{Channels: []string{"scp"}}, "exec", "scp -q -T -t x", ""},
		{broker.Limits{Channels: []string{"scp", "sftp"}}, "exec",
			"rsync --server -vlWogDtpRe.LsfxCIvu --files-from /etc/hosts . /x", "this rsync counts as a command"},
		// With one, they pass the positive lists (see
		// TestCheckLegacyTransfer), if the rule opts in to them.
		{broker.Limits{Channels: []string{"scp", "sftp"}, Files: broker.FilesUpload, UploadTo: []string{"/x"}}, "exec",
			"rsync --server -vlWogDtpre.iLsfxCIvu . /x", "uploads there go over SFTP only"},
		{broker.Limits{Channels: []string{"scp", "sftp"}, Files: broker.FilesUpload, UploadTo: []string{"/x"}, Legacy: []string{"rsync"}}, "exec",
			"rsync --server -vlWogDtpre.iLsfxCIvu . /x", "rsync option -l (--links) is refused"},
		{broker.Limits{Channels: []string{"scp", "sftp"}, Files: broker.FilesUpload, UploadTo: []string{"/x"}, Legacy: []string{"rsync"}}, "exec",
			"rsync --server -vWtre.iLsfxCIvu . /x", ""},
	}
	for _, tt := range tests {
		got := checkLimits(d(tt.limits), "db", tt.typ, tt.cmd)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%+v %s %q: got %q, want %q", tt.limits, tt.typ, tt.cmd, got, tt.want)
		}
	}
}

// What shellWords accepts, real shells read as the same words: generated
// commands from an alphabet of quotes, backslashes, globs, substitutions
// and separators are run through printf in each shell found here.
func TestShellWordsAgreeWithShells(t *testing.T) {
	t.Parallel()
	alphabet := []string{"a", "B", "7", "-", "/", ".", " ", "  ", `\`, `\ `, `\'`, `\$`, "'", "'x y'", "!", "$", "$(id)", "`id`",
		"*", "?", "[", "~", `"`, ";", "&", "|", ">", "<", "#", "=", ",", ":", "@", "+", "{", "}", "(", ")", "日", "é", "\t", "%",
		`\x2e`, `\n`, `'\'`, `\\`}
	rng := rand.New(rand.NewPCG(1, 2))
	var cmds []string
	var want []string
	for len(cmds) < 3000 {
		var b strings.Builder
		b.WriteString("x ")
		for n := rng.IntN(8); n >= 0; n-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		words, ok := shellWords(b.String())
		if !ok {
			continue
		}
		var w strings.Builder
		for _, x := range words[1:] {
			w.WriteString("[" + x.text + "]")
		}
		cmds, want = append(cmds, b.String()), append(want, w.String())
	}
	for _, shell := range []string{"/bin/sh", "/bin/bash", "/usr/bin/zsh", "/usr/bin/fish"} {
		if _, err := os.Stat(shell); err != nil {
			continue
		}
		var script strings.Builder
		script.WriteString("x() { for a in \"$@\"; do printf '[%s]' \"$a\"; done; echo; }\n")
		if strings.HasSuffix(shell, "fish") {
			script.Reset()
			script.WriteString("function x; for a in $argv; printf '[%s]' $a; end; echo; end\n")
		}
		for _, c := range cmds {
			script.WriteString(c + "\n")
		}
		out, err := exec.Command(shell, "-c", script.String()).Output()
		if err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(got) != len(cmds) {
			t.Fatalf("%s printed %d lines for %d commands", shell, len(got), len(cmds))
		}
		for i := range cmds {
			if got[i] != want[i] {
				t.Errorf("%s reads %q as %s; shellWords as %s", shell, cmds[i], got[i], want[i])
			}
		}
	}
}
