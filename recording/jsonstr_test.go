package recording

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// checkJSONString: appendJSONString gives valid JSON that decodes to what
// json.Marshal's encoding of the same bytes decodes to.
func checkJSONString(t *testing.T, p []byte) {
	t.Helper()
	got := appendJSONString([]byte("prefix"), p)
	if string(got[:6]) != "prefix" {
		t.Fatalf("the prefix was overwritten: %q", got)
	}
	got = got[6:]
	var dec string
	if err := json.Unmarshal(got, &dec); err != nil {
		t.Fatalf("appendJSONString(%q) = %s: not valid JSON: %v", p, got, err)
	}
	want, err := json.Marshal(string(p))
	if err != nil {
		t.Fatal(err)
	}
	var wantDec string
	if err := json.Unmarshal(want, &wantDec); err != nil {
		t.Fatal(err)
	}
	if dec != wantDec {
		t.Fatalf("appendJSONString(%q) decodes to %q; json.Marshal's to %q", p, dec, wantDec)
	}
	if !utf8.Valid(got) {
		t.Fatalf("appendJSONString(%q) = %q: not UTF-8", p, got)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain text", "a \"quoted\" back\\slash", "\r\n\t\b\f\x00\x1b[31mred\x1b[0m\x7f",
		"<script>&amp;</script>", "日本語のテキスト", "\u2028line\u2029para", "bad \xff\xfe bytes", "\xe6\x97", "\xed\xa0\x80 surrogate",
		"emoji 🙂 and combining e\u0301",
	} {
		checkJSONString(t, []byte(s))
	}
	// What reviewers see on disk: no HTML escapes, raw UTF-8.
	if got := string(appendJSONString(nil, []byte("<b>&日</b>"))); got != `"<b>&日</b>"` {
		t.Fatalf("got %s", got)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a\"b\\c\n", "\x1b]0;title\x07", "\xff\xc0\x80", "\u2028", "日本"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) { checkJSONString(t, p) })
}
