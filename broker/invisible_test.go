package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
)

// invisibles are characters that show nothing while they hide, join or
// reorder text around them.
var invisibles = []struct {
	name string
	r    rune
}{
	{"zero width space", '\u200b'},
	{"word joiner", '\u2060'},
	{"right-to-left override", '\u202e'},
	{"first strong isolate", '\u2068'},
	{"byte order mark", '\ufeff'},
	{"zero width joiner", '\u200d'},
	{"soft hyphen", '\u00ad'},
	{"line separator", '\u2028'},
	{"hangul filler", '\u3164'},
	{"variation selector 16", '\ufe0f'},
	{"tag latin small a", '\U000e0061'},
	{"mongolian vowel separator", '\u180e'},
}

// TestCheckTextRefusesInvisible: text people type is refused with any
// character that cannot be seen, naming it and where it is; visible text
// in any script passes.
func TestCheckTextRefusesInvisible(t *testing.T) {
	t.Parallel()
	for _, c := range invisibles {
		text := "INC-42 approve" + string(c.r) + " 41"
		_, err := broker.CheckText("a reason", text)
		want := fmt.Sprintf("a reason may not contain control characters or invisible formatting characters: U+%04X at character 15", c.r)
		if err == nil || err.Error() != want {
			t.Errorf("%s: CheckText = %v, want %q", c.name, err, want)
		}
	}
	for _, ok := range []string{"INC-42 ディスク満杯、東京で再起動", "café — naïve façade", "INC-42 «quoted» 'x' \"y\" <z> & 1/2", "ИНЦ-42 обновить", "INC-42 🙂"} {
		if got, err := broker.CheckText("a reason", ok); err != nil || got != ok {
			t.Errorf("CheckText(%q) = %q, %v; want it accepted as is", ok, got, err)
		}
	}
	hardening.Report(t, "29", "CheckText refuses %d kinds of invisible characters (zero widths, joiners, bidi overrides and isolates, BOM, soft hyphen, separators, fillers, variation selectors, tags), naming each and where; Japanese, Cyrillic, accents and an emoji accepted", len(invisibles))
}

// TestTypedTextRefusesInvisible: a request's reason, an approver's
// comment and a deny, cancel or revoke reason with an invisible character
// are refused and audited, through the broker's own operations.
func TestTypedTextRefusesInvisible(t *testing.T) {
	t.Parallel()
	s := newScenario(t, time.Hour)
	r := s.request(t, dbJP)
	n := 0
	for _, c := range invisibles[:3] { // U+200B, U+2060, U+202E
		text := "INC-42 rotate" + string(c.r) + " the password"
		want := fmt.Sprintf("U+%04X at character 14", c.r)
		_, _, err := s.b.RequestAccess(t.Context(), "wei", dbJP, source, text, 30*time.Minute)
		s.wantRefusal(t, err, "wei", "request", 0, "a reason may not contain control characters or invisible formatting characters", want)
		_, err = s.b.Approve(t.Context(), "kenji", r.ID, text)
		s.wantRefusal(t, err, "kenji", "approve", r.ID, "a comment may not contain", want)
		_, err = s.b.Deny(t.Context(), "kenji", r.ID, text)
		s.wantRefusal(t, err, "kenji", "deny", r.ID, "a reason may not contain", want)
		_, err = s.b.Cancel(t.Context(), "li", r.ID, text)
		s.wantRefusal(t, err, "li", "cancel", r.ID, "a note may not contain", want)
		n += 4
	}
	if got := s.stored(t, r.ID); got.State != broker.RequestPending || len(got.Approvals) != 0 {
		t.Errorf("after refused texts, request %d = {%s approvals %d}, want pending with none", r.ID, got.State, len(got.Approvals))
	}
	g, err := s.b.Approve(t.Context(), "kenji", r.ID, "ok")
	if err != nil || g.State != broker.RequestApproved {
		t.Fatalf("Approve(kenji, %d) = %s, %v; want approved", r.ID, g.State, err)
	}
	for _, c := range invisibles[:3] {
		_, err := s.b.Revoke(t.Context(), "kenji", g.ID, "done"+string(c.r)+" INC-42")
		s.wantRefusal(t, err, "kenji", "revoke", g.ID, "a reason may not contain", fmt.Sprintf("U+%04X at character 5", c.r))
		n++
	}
	if got := s.stored(t, g.ID); got.State != broker.RequestApproved {
		t.Errorf("after refused revocations, request %d is %s, want approved", g.ID, got.State)
	}
	hardening.Report(t, "29", "%d reasons, comments and notes with U+200B, U+2060 or U+202E refused (request, approve, deny, cancel, revoke), each audited and naming the character and where it is", n)
}
