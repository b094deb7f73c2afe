package recording

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSessionText feeds arbitrary terminal and exec bytes, split in two
// events anywhere, through text extraction: what comes out must be text
// a reviewer's page and a search index can hold, whatever went in.
func FuzzSessionText(f *testing.F) {
	for _, s := range []string{
		"ls -l /etc/shadw\x7fow\r", "\x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\\r\n", "\x1b[31mred\x1b[0m",
		"Password: ", "\u009b31m\u009d0;t\u009c", "a\r\nb\rc\bd", "\x1bP$q\x1b", "\xff\x00\xc3", "\x1b[200~paste\x1b[201~\r",
	} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data string, at uint8) {
		cut := min(int(at), len(data))
		parts := []string{data[:cut], data[cut:]}
		var events []Event
		for i, p := range parts {
			events = append(events,
				Event{Time: float64(i), Code: "o", Data: strings.ToValidUTF8(p, "\uFFFD")},
				Event{Time: float64(i), Code: "i", Data: strings.ToValidUTF8(p, "\uFFFD")})
		}
		text, timeline := feedChannel(true, "shell", events)
		checkExtracted(t, "pty", text, timeline)

		events = events[:0]
		for i, p := range parts {
			b64 := base64.StdEncoding.EncodeToString([]byte(p))
			events = append(events,
				Event{Time: float64(i), Code: "x-stdout", Data: b64},
				Event{Time: float64(i), Code: "x-stdin", Data: b64},
				Event{Time: float64(i), Code: "x-exec", Data: p},
				Event{Time: float64(i), Code: "x-file", Data: p})
		}
		text, timeline = feedChannel(false, "shell", events)
		checkExtracted(t, "exec", text, timeline)
	})
}

func checkExtracted(t *testing.T, name string, text Text, timeline []TimelineEvent) {
	t.Helper()
	for field, s := range map[string]string{"Typed": text.Typed, "Shown": text.Shown} {
		if !utf8.ValidString(s) {
			t.Errorf("%s: %s is not UTF-8: %q", name, field, s)
		}
		for _, r := range s {
			if r != '\n' && r != '\t' && isControl(r) {
				t.Errorf("%s: %s holds control %U: %q", name, field, r, s)
				break
			}
		}
	}
	for _, line := range strings.Split(text.Shown, "\n") {
		if len(line) > maxLineBytes {
			t.Errorf("%s: a shown line of %d bytes", name, len(line))
		}
	}
	for _, e := range timeline {
		if len(e.Text) > maxTimelineText || !utf8.ValidString(e.Text) || strings.ContainsFunc(e.Text, isControl) {
			t.Errorf("%s: timeline text %q", name, e.Text)
		}
	}
}
