package session

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// legacyRule is a direction-limited rule that opts in to scp -O and rsync,
// as the rows of testdata/legacy-commands.tsv are checked against.
func legacyRule(files string) broker.Decision {
	l := broker.Limits{Channels: []string{broker.ChannelSFTP, broker.ChannelSCP}, Files: files,
		Legacy: []string{broker.LegacySCP, broker.LegacyRsync}}
	if files == broker.FilesUpload {
		l.UploadTo = []string{"/tmp/up"}
	}
	return broker.Decision{Effect: broker.Allow, Rule: "r", Limits: l}
}

type legacyRow struct {
	rule, verdict, client, command string
}

// legacyRows reads testdata/legacy-commands.tsv: the commands that stock
// rsync and OpenSSH scp clients started (see legacy-commands.sh).
func legacyRows(t testing.TB) []legacyRow {
	t.Helper()
	b, err := os.ReadFile("testdata/legacy-commands.tsv")
	if err != nil {
		t.Fatal(err)
	}
	var rows []legacyRow
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 4 {
			t.Fatalf("bad row %q", sc.Text())
		}
		rows = append(rows, legacyRow{f[0], f[1], f[2], f[3]})
	}
	return rows
}

func TestLegacyTransferRealCommands(t *testing.T) {
	t.Parallel()
	rows := legacyRows(t)
	accepted := 0
	for _, r := range rows {
		got := checkLimits(legacyRule(r.rule), "db", "exec", r.command)
		if r.verdict == "ok" {
			if got != "" {
				t.Errorf("%s (%s) under %s: refused: %s", r.client, r.command, r.rule, got)
				continue
			}
			accepted++
			checkRecordedDirection(t, r.command, r.rule == broker.FilesUpload)
		} else if !strings.Contains(got, r.verdict) {
			t.Errorf("%s (%s) under %s: got %q, want a refusal naming %q", r.client, r.command, r.rule, got, r.verdict)
		}
	}
	hardening.Report(t, "32", "%d remote commands of stock rsync 3.5.0 and OpenSSH 9.2 scp -O clients under upload_only and download_only rules opting in to both: %d plain transfers accepted, %d refused naming the option or path (-s in every spelling, --files-from, --delete*, dry runs and listings, --remove-source-files, checksums, links and devices, other directories, destinations outside upload_to, with .. or relative)",
		len(rows), accepted, len(rows)-accepted)
}

// checkRecordedDirection fails unless an accepted command is recorded as
// the scp channel kind going the enforced way.
func checkRecordedDirection(t *testing.T, command string, upload bool) {
	t.Helper()
	kind, up, down := channelKind("exec", command)
	if kind != broker.ChannelSCP || up != upload || down == upload {
		t.Errorf("%q accepted as an upload=%v, but channelKind says %s up=%v down=%v", command, upload, kind, up, down)
	}
	var got events
	if _, err := newTransferObserver("exec", command, got.emit); err != nil {
		t.Fatal(err)
	}
	if legacyProgram(command) == broker.LegacyRsync {
		var ev rsyncEvent
		if len(got.list) != 1 || json.Unmarshal([]byte(strings.TrimPrefix(got.list[0], "x-file ")), &ev) != nil || ev.Direction != direction(upload) {
			t.Errorf("%q: recorded %q, want one %s", command, got.list, direction(upload))
		}
	}
}

func TestCheckLegacyTransfer(t *testing.T) {
	t.Parallel()
	up, down := legacyRule(broker.FilesUpload), legacyRule(broker.FilesDownload)
	notOptedIn := func(d broker.Decision, legacy ...string) broker.Decision {
		d.Limits.Legacy = legacy
		return d
	}
	withExec := func(d broker.Decision) broker.Decision {
		d.Limits.Channels = []string{broker.ChannelExec, broker.ChannelSCP}
		return d
	}
	const plain = "rsync --server -Wtre.iLsfxCIvu . /tmp/up/"
	tests := []struct {
		d    broker.Decision
		cmd  string
		want string // "" allowed, else a part of the refusal
	}{
		{up, plain, ""},
		{up, "scp -t /tmp/up/x", ""},
		// Not opted in: SFTP only, said so.
		{notOptedIn(up), plain, `rsync is not allowed on db under rule "r": uploads there go over SFTP only (sftp, or scp without -O)`},
		{notOptedIn(up, broker.LegacyRsync), "scp -t /tmp/up/x", `scp -O is not allowed on db under rule "r": uploads there go over SFTP only`},
		{notOptedIn(up, broker.LegacySCP), plain, `rsync is not allowed on db`},
		{notOptedIn(down), "scp -f /srv/x", `scp -O is not allowed on db under rule "r": downloads from there go over SFTP only`},
		{notOptedIn(up), "  scp -t /tmp/up/x", "scp -O is not allowed"},
		{notOptedIn(up), "scp\t-t /tmp/up/x", "scp -O is not allowed"},
		// A rule that allows commands lets a command through, but not one
		// known to go the other way.
		{withExec(notOptedIn(up)), plain, ""},
		{withExec(up), "rsync --server -sWe.LsfxCIvu", ""},
		{withExec(up), "scp -f /etc/passwd", "only uploads"},
		// -s in every spelling, before the direction (which it hides).
		{up, "rsync --server -vsWe.LsfxCIvu . /tmp/up/", "rsync option -s (--secluded-args) is refused under rule \"r\": with it the target's rsync reads its options and paths from the connection"},
		{down, "rsync --server -sWRe.LsfxCIvu", "-s (--secluded-args)"},
		{down, "rsync --server --sender -se.LsfxCIvu", "-s (--secluded-args)"},
		{up, "rsync --server --protect-args -We.LsfxCIvu . /tmp/up/", "--protect-args (-s)"},
		{up, "rsync --server --secluded-args -We.LsfxCIvu . /tmp/up/", "--secluded-args (-s)"},
		{up, "rsync --server -We.LsfxCIvu --no-s . /tmp/up/", "--no-s"},
		{up, "rsync --server -We.LsfxCIvu . /tmp/up/ -s", "-s (--secluded-args)"},
		{up, "rsync --server -W -s . /tmp/up/", "-s (--secluded-args)"},
		// ... but 's' among the capabilities after -e is not -s.
		{up, "rsync --server -We.s . /tmp/up/", ""},
		{up, "rsync --server -We31.2iLsfxCIvu . /tmp/up/", ""},
		{up, "rsync --server -We.iLsfxCIvuZ . /tmp/up/", "rsync option -e.iLsfxCIvuZ"},
		{up, "rsync --server -Wte . /tmp/up/", "rsync option -e"},
		// --sender anywhere (rsync's parser takes options anywhere) is a
		// download.
		{up, "rsync --server -We.LsfxCIvu . /tmp/up/ --sender", "only uploads"},
		{up, "rsync --server -We.LsfxCIvu --sender . /tmp/up/", "only uploads"},
		{down, "rsync --server -e.LsfxCIvu . /srv/ --sender", "rsync option --sender"},
		// Options in quotes or after the paths.
		{up, "rsync --server -We.LsfxCIvu '--delete' . /tmp/up/", `this rsync command is refused under rule "r": the target's shell would read more into it`},
		{up, `rsync --server -We.LsfxCIvu \--delete . /tmp/up/`, "this rsync command"},
		{up, "rsync --server -We.LsfxCIvu . /tmp/up/ --delete", "rsync option --delete"},
		{up, "rsync --server -We.LsfxCIvu . /tmp/up/ --files-from=/etc/passwd", "rsync option --files-from"},
		{up, "scp -t /tmp/up/x; cat /etc/passwd", "this scp -O command"},
		{up, "rsync --server -We.LsfxCIvu . $HOME", "this rsync command"},
		// Not the server side of one transfer.
		{up, "rsync -W /tmp/up/a /tmp/up/b", "only as the server side"},
		{up, "rsync --server --daemon .", "only as the server side"},
		{up, "rsync --server -We.LsfxCIvu /tmp/up/", "rsync argument \"/tmp/up/\""},
		{up, "rsync --server -We.LsfxCIvu", "it names no path"},
		{up, "rsync --server -We.LsfxCIvu . /tmp/up/a /tmp/up/b", "one destination"},
		{up, "rsync --server -We.LsfxCIvu -- . /tmp/up/", "rsync argument \"--\""},
		{up, "rsync --server -We.LsfxCIvu - . /tmp/up/", "rsync argument \"-\""},
		{up, "rsync --server -We.LsfxCIvu --log-format=%n . /tmp/up/", `rsync option "--log-format=%n"`},
		{up, "rsync --server -We.LsfxCIvu --partial=x . /tmp/up/", `rsync option "--partial=x"`},
		{up, "rsync --server -We.LsfxCIvu --timeout . /tmp/up/", `rsync option "--timeout"`},
		{up, "rsync --server -We.LsfxCIvu --info=FLIST2 . /tmp/up/", `rsync option "--info=FLIST2"`},
		{up, "rsync --server -We.LsfxCIvu --debug=ALL . /tmp/up/", "rsync option --debug"},
		{up, "rsync --server -We.LsfxCIvu --log-file=/tmp/up/l . /tmp/up/", "--log-file is refused under rule \"r\": it has the target write a log file"},
		{up, "rsync --server -We.LsfxCIvu --remove-sent-files . /tmp/up/", "it deletes files on the target"},
		{up, "rsync --server -We.LsfxCIvu --force . /tmp/up/", "it deletes files on the target"},
		{up, "rsync --server -We.LsfxCIvu --write-batch=/tmp/up/b . /tmp/up/", "--write-batch"},
		{up, "rsync --server -We.LsfxCIvu --exclude-from=/etc/shadow . /tmp/up/", "--exclude-from"},
		{up, "rsync --server -WTe.LsfxCIvu . /tmp/up/", "rsync option -T (--temp-dir)"},
		{up, "rsync --server -WB1024 . /tmp/up/", "rsync option -B (--block-size)"},
		// Letters before -e that hold an s are refused as -s, even where
		// they are another option's argument (here -M's).
		{up, "rsync --server -WM--sender . /tmp/up/", "rsync option -s (--secluded-args)"},
		{up, "rsync --server -WM--xender . /tmp/up/", "rsync option -M (--remote-option)"},
		{up, "rsync --server --whole-file . /tmp/up/", "rsync option --whole-file"},
		// Downloads.
		{down, "rsync --server --sender -e.LsfxCIvu --files-from --remove-source-files . /srv/", "rsync option --files-from is refused under rule \"r\": it needs a file"},
		{down, "rsync --server --sender -e.LsfxCIvu --files-from", "it needs a file"},
		{down, "rsync --server --sender -e.LsfxCIvu --files-from /tmp/list . /srv/", ""},
		{down, "rsync --server --sender -e.LsfxCIvu --files-from=/tmp/list . /srv/", `rsync option "--files-from=/tmp/list"`},
		{down, "rsync --server --sender -e.LsfxCIvu --remove-sent-files . /srv/", "--remove-sent-files"},
		{down, "rsync --server --sender -e.LsfxCIvu --log-file=/srv/x . /srv/", "--log-file"},
		{down, "rsync --server --sender -e.LsfxCIvu --delete . /srv/", "--delete"},
		{down, "rsync --server --sender -e.LsfxCIvu .", "it names no path"},
		{down, "rsync --server --sender -e.LsfxCIvu . -x", "rsync option -x"},
		{down, "rsync --server --sender -e.LsfxCIvu . relative/path", ""},
		{down, "rsync --server --sender -be.LsfxCIvu . /srv/", "rsync option -b (--backup)"},
		// scp: exactly what OpenSSH's scp sends.
		{up, "/usr/bin/scp -v -r -p -d -t -- /tmp/up/", ""},
		{up, "scp -d -t /tmp/up", ""},
		{up, "scp -t '/tmp/up/a b'", ""},
		{up, "scp -q -t /tmp/up/x", "scp option -q is refused"},
		{up, "scp -T -t /tmp/up/x", "scp option -T"},
		{up, "scp -rt /tmp/up/x", "scp option -rt"},
		{up, "scp -r -r -t /tmp/up/x", "scp option -r twice"},
		{up, "scp -t -f /tmp/up/x", "exactly one of -t and -f"},
		{up, "scp /tmp/up/x", "exactly one of -t and -f"},
		{up, "scp -t", "one transfer names one path"},
		{up, "scp -t /tmp/up/x /tmp/up/y", "one transfer names one path"},
		{up, "scp -t -- -x", "relative"},
		{up, "scp -t -o ProxyCommand=x /tmp/up/x", "scp option -o"},
		{down, "scp -f -x", "scp option -x"},
		{down, "scp -f /etc/shadow", ""},
		{down, "scp -t /tmp/up/x", "only downloads from db are allowed under rule \"r\"; this scp -O uploads"},
		// Destinations, as the target resolves them.
		{up, "scp -t /tmp/up", ""},
		{up, "scp -t /tmp/up/", ""},
		{up, "scp -t /tmp//up/./a/", ""},
		{up, "scp -t //tmp/up/a", ""},
		{up, "scp -t /tmp/upx", `scp -O destination "/tmp/upx" is refused under rule "r": uploads land inside /tmp/up only`},
		{up, "scp -t /tmp", "uploads land inside /tmp/up only"},
		{up, "scp -t /", "uploads land inside"},
		{up, "scp -t /tmp/up/../up/x", "without .."},
		{up, "scp -t /tmp/up/..", "without .."},
		{up, "scp -t x", `scp -O destination "x" is refused under rule "r": a relative path depends on the login's home; give an absolute path inside /tmp/up`},
		{up, "scp -t .", "give an absolute path inside /tmp/up"},
		{up, "scp -t ''", "give an absolute path inside /tmp/up"},
		// An upload directory's own mode is not for rsync -p to set.
		{up, "rsync --server -Wtpre.iLsfxCIvu . /tmp/up/", `rsync option -p (--perms) into /tmp/up itself is refused under rule "r": it would give /tmp/up the mode of the source directory`},
		{up, "rsync --server -Wtpre.iLsfxCIvu . /tmp//up/.", "into /tmp/up itself"},
		{up, "rsync --server -Wtpre.iLsfxCIvu . /tmp/up/sub/", ""},
		{up, "scp -r -p -t /tmp/up/", ""}, // scp's sink sets modes only of what it makes
	}
	for _, tt := range tests {
		got := checkLimits(tt.d, "db", "exec", tt.cmd)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s %v legacy %v: %q: got %q, want %q", tt.d.Limits.Files, tt.d.Limits.Channels, tt.d.Limits.Legacy, tt.cmd, got, tt.want)
		}
	}
}

func TestRsyncWithSecludedArgsRecordedWithoutDirection(t *testing.T) {
	t.Parallel()
	// A rule without a direction limit lets rsync -s through; its options
	// and paths went over the connection, so the record does not guess.
	var got events
	if _, err := newTransferObserver("exec", "rsync --server -sWRe.LsfxCIvu", got.emit); err != nil {
		t.Fatal(err)
	}
	want := `x-file {"protocol":"rsync","direction":"unknown","paths":[],"content":"not parsed (rsync -s (--secluded-args): options and paths sent over the connection)"}`
	if len(got.list) != 1 || got.list[0] != want {
		t.Errorf("recorded %q, want %q", got.list, want)
	}
}

// shWords returns the words sh reads in command, run as printf's
// arguments.
func shWords(t *testing.T, command string) []string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", `printf '%s\0' `+command).Output()
	if err != nil {
		t.Fatalf("sh: %q: %v", command, err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// Refused rsync options as an independent list: spelled out, not taken
// from the allowlists.
var (
	refusedRsyncLetters = "snclDKyRbuHogAXCm"
	refusedRsyncLong    = []string{"--secluded-args", "--protect-args", "--no-s", "--files-from", "--include-from",
		"--exclude-from", "--filter", "--delete", "--remove-source-files", "--remove-sent-files", "--dry-run", "--list-only",
		"--checksum", "--compare-dest", "--copy-dest", "--link-dest", "--fuzzy", "--read-batch", "--write-batch",
		"--only-write-batch", "--links", "--devices", "--specials", "--backup", "--temp-dir", "--partial-dir",
		"--log-file", "--keep-dirlinks", "--inplace", "--daemon", "--config", "--rsh", "--rsync-path", "--sender",
		"--remote-option", "--debug", "--iconv"}
)

func FuzzTransferCommand(f *testing.F) {
	for _, r := range legacyRows(f) {
		f.Add(r.command, r.rule == broker.FilesDownload)
	}
	f.Add("rsync --server -We.LsfxCIvu . /tmp/up/../x", false)
	f.Add("scp -t /tmp/up/x", false)
	f.Fuzz(func(t *testing.T, command string, download bool) {
		files := broker.FilesUpload
		if download {
			files = broker.FilesDownload
		}
		d := legacyRule(files)
		kind, _, _ := channelKind("exec", command)
		if kind == broker.ChannelSCP && legacyProgram(command) == "" {
			t.Fatalf("%q is the scp channel to channelKind, but no transfer to legacyProgram", command)
		}
		if checkLimits(d, "db", "exec", command) != "" {
			return
		}
		program := legacyProgram(command)
		if program == "" {
			t.Fatalf("%q accepted under a rule that allows no command", command)
		}
		words, _ := shellWords(command)
		if sh := shWords(t, command); !slices.Equal(sh, texts(words)) {
			t.Fatalf("%q: sh reads %q, sekisho %q", command, sh, texts(words))
		}
		args := texts(words)[1:]
		checkRecordedDirection(t, command, !download)
		for _, a := range args {
			if a == "--protect-args" || a == "--secluded-args" {
				t.Fatalf("%q accepted with %s", command, a)
			}
			if program == broker.LegacyRsync && strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") {
				flags, _, _ := strings.Cut(a, "e")
				if strings.Contains(flags, "s") {
					t.Fatalf("%q accepted with -s", command)
				}
			}
		}
		if download {
			for _, a := range args {
				if strings.HasPrefix(a, "--remove-s") || strings.HasPrefix(a, "--delete") || strings.HasPrefix(a, "--log-file") {
					t.Fatalf("%q accepted under download_only with %s", command, a)
				}
			}
			return
		}
		// An upload: no refused option, one destination inside /tmp/up.
		dot, whole := len(args)-1, false
		for i, a := range args {
			if program == broker.LegacyRsync && strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") {
				flags, _, _ := strings.Cut(a[1:], "e")
				if strings.ContainsAny(flags, refusedRsyncLetters) {
					t.Fatalf("%q accepted with %s", command, a)
				}
				whole = whole || strings.Contains(flags, "W")
			}
			for _, r := range refusedRsyncLong {
				if a == r || strings.HasPrefix(a, r+"=") || strings.HasPrefix(a, "--delete") {
					t.Fatalf("%q accepted with %s", command, a)
				}
			}
			if a == "." && program == broker.LegacyRsync && dot == len(args)-1 {
				dot = i
			}
		}
		dest := args[len(args)-1]
		if program == broker.LegacyRsync && (dot != len(args)-2 || !whole) {
			t.Fatalf("%q accepted with %d words after \".\", whole files %v", command, len(args)-1-dot, whole)
		}
		if !strings.HasPrefix(dest, "/") || slices.Contains(strings.Split(dest, "/"), "..") ||
			(path.Clean(dest) != "/tmp/up" && !strings.HasPrefix(path.Clean(dest), "/tmp/up/")) {
			t.Fatalf("%q accepted with destination %q", command, dest)
		}
	})
}
