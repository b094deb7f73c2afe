package session

import (
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
		{"exec", "scp -f $(cat /etc/shadow)", "exec", false, false},
		{"exec", "scp -t x && curl evil", "exec", false, false},
		{"exec", "rsync --server -vlogDtpre.iLsfxCIvu . /tmp/x/", "scp", true, false},
		{"exec", "rsync --server --sender -vlogDtpre.iLsfxCIvu . /tmp/x/", "scp", false, true},
		{"exec", "rsync -a /a /b", "exec", false, false},
		{"exec", "", "exec", false, false},
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
		{broker.Limits{Files: broker.FilesUpload}, "exec", "scp -t /tmp/x", ""},
		{broker.Limits{Files: broker.FilesUpload}, "exec", "scp -f /etc/passwd", "only uploads"},
		{broker.Limits{Files: broker.FilesUpload}, "subsystem", "sftp", ""}, // checked request by request
		{broker.Limits{Files: broker.FilesDownload}, "exec", "rsync --server --sender . /x", ""},
		{broker.Limits{Files: broker.FilesDownload}, "exec", "rsync --server . /x", "only downloads"},
	}
	for _, tt := range tests {
		got := checkLimits(d(tt.limits), "db", tt.typ, tt.cmd)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%+v %s %q: got %q, want %q", tt.limits, tt.typ, tt.cmd, got, tt.want)
		}
	}
}
