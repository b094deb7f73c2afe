package recording

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// exportSession records a session with a terminal channel and an exec
// channel that exercise the export: hostile output, bytes that are not
// UTF-8, input, a resize, file and exit events.
func exportSession(t *testing.T) (root, id string) {
	t.Helper()
	root, id, s := newSession(t)
	pty := newChannel(t, s, ChannelInfo{PTY: true, Term: "xterm", Kind: "shell", Cols: 100, Rows: 30})
	must(t, pty.Stdin([]byte("echo hi\r")))
	must(t, pty.Stdout([]byte("hi \x1b]52;c;aGk=\x07there\r\n")))
	must(t, pty.Stdout([]byte("bad\xff\r\n")))
	must(t, pty.Resize(120, 40))
	must(t, pty.Event("x-file", `{"protocol":"sftp","direction":"upload","path":"/tmp/x","size":3,"sha256":"abc"}`))
	must(t, pty.Stdout([]byte("\x1b[31mred\x1b[0m 東\r\n")))
	must(t, pty.Event("x-exit-status", "0"))
	must(t, pty.Close())
	ex := newChannel(t, s, ChannelInfo{Kind: "exec", Command: "tar cf - /etc"})
	must(t, ex.Event("x-exec", "tar cf - /etc"))
	must(t, ex.Stdin([]byte("input\n")))
	must(t, ex.Stdout([]byte("line1\nline2\n")))
	must(t, ex.Stdout([]byte{0, 1, 2, 0xff}))
	must(t, ex.Stderr([]byte("oops\n")))
	must(t, ex.Event("x-exit-status", "2"))
	must(t, ex.Close())
	must(t, s.End(time.Now(), "done", 1, 2))
	return root, id
}

// asciinemaCat plays a cast file with `asciinema cat`, which needs a
// terminal: `script` gives it one.
func asciinemaCat(t *testing.T, path string) string {
	t.Helper()
	if _, err := exec.LookPath("asciinema"); err != nil {
		t.Fatal("asciinema is not installed: this test checks exported casts with `asciinema cat` (apt-get install asciinema)")
	}
	if _, err := exec.LookPath("script"); err != nil {
		t.Fatal("script (util-linux) is not installed: it gives `asciinema cat` the terminal it needs")
	}
	out, err := exec.Command("script", "-qec", "asciinema cat '"+path+"'", "/dev/null").CombinedOutput()
	if err != nil {
		t.Fatalf("asciinema cat %s: %v\n%s", path, err, out)
	}
	return string(out)
}

// castLines reads an exported cast: its header keys and its events.
func castLines(t *testing.T, path string) (map[string]any, []Event) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var h map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil {
		t.Fatalf("header %q: %v", lines[0], err)
	}
	var evs []Event
	for _, l := range lines[1:] {
		e, ok := parseEvent([]byte(l))
		if !ok {
			t.Fatalf("not an event: %q", l)
		}
		evs = append(evs, e)
	}
	return h, evs
}

func exportCastFile(t *testing.T, root, id string, opt CastOptions) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "export.cast")
	f, err := os.Create(path)
	must(t, err)
	n, err := ExportCast(f, root, id, opt)
	must(t, err)
	must(t, f.Close())
	return path, n
}

func TestExportCast(t *testing.T) {
	root, id := exportSession(t)

	path, n := exportCastFile(t, root, id, CastOptions{})
	if n != 1 {
		t.Errorf("exported channel %d by default, want the terminal channel 1", n)
	}
	h, evs := castLines(t, path)
	for k := range h {
		switch k {
		case "version", "width", "height", "timestamp", "command", "title", "env":
		default:
			t.Errorf("header has the non-standard key %q", k)
		}
	}
	if h["version"] != 2.0 || h["width"] != 100.0 || h["height"] != 30.0 {
		t.Errorf("header %v", h)
	}
	var got []ev
	for _, e := range evs {
		got = append(got, ev{e.Code, e.Data})
	}
	want := []ev{{"i", "echo hi\r"}, {"o", "hi there\r\n"}, {"o", "bad\ufffd\r\n"}, {"r", "120x40"}, {"o", "\x1b[31mred\x1b[0m 東\r\n"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
	if out := asciinemaCat(t, path); !strings.Contains(out, "hi there") || !strings.Contains(out, "東") || strings.Contains(out, "]52") {
		t.Errorf("asciinema cat: %q", out)
	}

	// Raw keeps the output as recorded.
	path, _ = exportCastFile(t, root, id, CastOptions{Channel: 1, Raw: true})
	if _, evs := castLines(t, path); evs[1].Data != "hi \x1b]52;c;aGk=\x07there\r\n" {
		t.Errorf("raw export has %q", evs[1].Data)
	}
	asciinemaCat(t, path)

	// A channel without a terminal: output as replay shows it.
	path, n = exportCastFile(t, root, id, CastOptions{Channel: 2})
	if n != 2 {
		t.Errorf("exported channel %d, want 2", n)
	}
	_, evs = castLines(t, path)
	got = got[:0]
	for _, e := range evs {
		got = append(got, ev{e.Code, e.Data})
	}
	want = []ev{{"i", "input\n"}, {"o", "line1\r\nline2\r\n"}, {"o", "[4 bytes of binary data]\r\n"}, {"o", "oops\r\n"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("exec events\n got %q\nwant %q", got, want)
	}
	if out := asciinemaCat(t, path); !strings.Contains(out, "line2") {
		t.Errorf("asciinema cat: %q", out)
	}

	for _, bad := range []int{3, -1} {
		if _, err := ExportCast(io.Discard, root, id, CastOptions{Channel: bad}); err == nil {
			t.Errorf("ExportCast of channel %d succeeded", bad)
		}
	}
}

// A recording cut mid-event exports up to the cut, as a cast that plays.
func TestExportCastTruncated(t *testing.T) {
	root, id, s := newSession(t)
	c := newChannel(t, s, ChannelInfo{PTY: true, Kind: "shell"})
	must(t, c.Stdout([]byte("kept\r\n")))
	must(t, c.Close())
	f, err := os.OpenFile(filepath.Join(s.Dir(), "1.cast"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString(`[1.0,"o","lo`)
	must(t, err)
	must(t, f.Close())
	path, _ := exportCastFile(t, root, id, CastOptions{})
	if _, evs := castLines(t, path); len(evs) != 1 || evs[0].Data != "kept\r\n" {
		t.Errorf("events %+v", evs)
	}
	if out := asciinemaCat(t, path); !strings.Contains(out, "kept") {
		t.Errorf("asciinema cat: %q", out)
	}
}

// exportDoc is the document ExportJSON writes, as a tool reads it.
type exportDoc struct {
	Format   string `json:"format"`
	Version  int    `json:"version"`
	Session  Meta   `json:"session"`
	Channels []struct {
		Channel int    `json:"channel"`
		File    string `json:"file"`
		Header  Header `json:"header"`
		Events  []struct {
			Time   float64 `json:"time"`
			Code   string  `json:"code"`
			Text   *string `json:"text"`
			Base64 *string `json:"base64"`
		} `json:"events"`
		Truncated bool `json:"truncated"`
	} `json:"channels"`
}

func exportJSON(t *testing.T, root, id string, channel int) exportDoc {
	t.Helper()
	var b bytes.Buffer
	must(t, ExportJSON(&b, root, id, channel))
	if !json.Valid(b.Bytes()) {
		t.Fatalf("not JSON:\n%s", b.Bytes())
	}
	var doc exportDoc
	dec := json.NewDecoder(&b)
	dec.DisallowUnknownFields()
	must(t, dec.Decode(&doc))
	return doc
}

// The JSON export holds every event of the recording, its bytes exact.
func TestExportJSONRoundTrip(t *testing.T) {
	root, id := exportSession(t)
	// The terminal channel ends with a cut event.
	f, err := os.OpenFile(filepath.Join(root, id, "1.cast"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString(`[9.0,"o","cu`)
	must(t, err)
	must(t, f.Close())

	doc := exportJSON(t, root, id, 0)
	meta, err := ReadMeta(root, id)
	must(t, err)
	if doc.Format != "sekisho-recording" || doc.Version != ExportJSONVersion || !reflect.DeepEqual(doc.Session, meta) {
		t.Errorf("format %q version %d session %+v", doc.Format, doc.Version, doc.Session)
	}
	chans, err := Channels(root, id)
	must(t, err)
	if len(doc.Channels) != len(chans) {
		t.Fatalf("%d channels, want %d", len(doc.Channels), len(chans))
	}
	sawBase64 := false
	for i, ch := range chans {
		dc := doc.Channels[i]
		if dc.Channel != i+1 || dc.File != ch.Name || dc.Truncated != (i == 0) {
			t.Errorf("channel %d: number %d, file %q, truncated %v", i+1, dc.Channel, dc.File, dc.Truncated)
		}
		cr, err := OpenChannel(ch)
		must(t, err)
		defer cr.Close()
		if !reflect.DeepEqual(dc.Header, cr.Header()) {
			t.Errorf("channel %d header %+v, want %+v", i+1, dc.Header, cr.Header())
		}
		for j := 0; ; j++ {
			e, err := cr.Next()
			if err == io.EOF || errors.Is(err, ErrTruncated) {
				if j != len(dc.Events) {
					t.Errorf("channel %d: %d events exported, want %d", i+1, len(dc.Events), j)
				}
				break
			}
			must(t, err)
			if j >= len(dc.Events) {
				t.Fatalf("channel %d: event %d missing", i+1, j)
			}
			je := dc.Events[j]
			want, err := e.Bytes()
			must(t, err)
			var got []byte
			switch {
			case je.Text != nil && je.Base64 == nil:
				got = []byte(*je.Text)
			case je.Base64 != nil && je.Text == nil:
				sawBase64 = true
				got, err = base64.StdEncoding.DecodeString(*je.Base64)
				must(t, err)
			default:
				t.Fatalf("channel %d event %d has text %v and base64 %v", i+1, j, je.Text, je.Base64)
			}
			if je.Time != e.Time || je.Code != e.Code || !bytes.Equal(got, want) {
				t.Errorf("channel %d event %d: %v %q %q, want %v %q %q", i+1, j, je.Time, je.Code, got, e.Time, e.Code, want)
			}
		}
		f.Close()
	}
	if !sawBase64 {
		t.Error("no event was exported as base64")
	}

	one := exportJSON(t, root, id, 2)
	if len(one.Channels) != 1 || one.Channels[0].Channel != 2 {
		t.Errorf("export of channel 2 has %d channels", len(one.Channels))
	}
	if err := ExportJSON(io.Discard, root, id, 3); err == nil {
		t.Error("ExportJSON of channel 3 succeeded")
	}
}
