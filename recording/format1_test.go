package recording

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testdata/format1 holds a recording made by the recorder before exact
// bytes got a file of their own (format 1: base64 in the event stream),
// sealed with a key of which only the public half is kept (as
// `sekisho recording-key` prints it). Recordings of
// that format stay readable and verifiable.
const format1Root, format1ID = "testdata/format1", "0d3c7f5e-8a41-4c36-9f0b-6f2a1e5d4c01"

func format1Key(t *testing.T) ed25519.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(format1Root, "recording_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return pk.(ssh.CryptoPublicKey).CryptoPublicKey().(ed25519.PublicKey)
}

// format1Copy copies the fixture to a temporary root, as a reviewer's
// copy of an old recording would be.
func format1Copy(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(format1Root)); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestFormat1Verifies(t *testing.T) {
	root := format1Copy(t)
	v, err := Verify(filepath.Join(root, format1ID), format1Key(t))
	if err != nil {
		t.Fatal(err)
	}
	v.CheckOffline()
	if !v.OK || !v.Complete || !v.Signed || v.Chunks == 0 {
		t.Fatalf("format-1 recording: %+v", v)
	}

	// A byte changed in the base64 of an exact-bytes event is found.
	path := filepath.Join(root, format1ID, "2.cast")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, bytes.Replace(b, []byte("H4sI"), []byte("H4sJ"), 1), 0o600)
	v, err = Verify(filepath.Join(root, format1ID), format1Key(t))
	if err != nil {
		t.Fatal(err)
	}
	v.CheckOffline()
	if v.OK || len(v.Problems) == 0 || v.Problems[0].File != "2.cast" {
		t.Fatalf("a changed format-1 chunk: %+v", v)
	}
}

func TestFormat1ReadsAsRecorded(t *testing.T) {
	var doc struct {
		Channels []struct {
			File   string
			Events []jsonEvent
		}
	}
	var out bytes.Buffer
	if err := ExportJSON(&out, format1Root, format1ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Channels) != 2 {
		t.Fatalf("%d channels, want 2", len(doc.Channels))
	}
	got := map[string][]byte{}
	for _, e := range doc.Channels[1].Events {
		switch {
		case e.Base64 != nil:
			b, _ := base64.StdEncoding.DecodeString(*e.Base64)
			got[e.Code] = append(got[e.Code], b...)
		case e.Text != nil:
			got[e.Code] = append(got[e.Code], *e.Text...)
		}
	}
	want := map[string]string{
		"x-stdin":       "\x00\x01\x02\xffhi\n",
		"x-stdout":      "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
		"x-stderr":      "gzip: warning\n",
		"x-exit-status": "0",
	}
	for code, w := range want {
		if string(got[code]) != w {
			t.Errorf("exec channel %s: %q, want %q", code, got[code], w)
		}
	}

	var screen bytes.Buffer
	if err := Replay(context.Background(), &screen, format1Root, format1ID, ReplayOptions{Speed: 1000}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"root@db-jp-01:~# ls", "file-日本.txt", "gzip: warning"} {
		if !strings.Contains(screen.String(), w) {
			t.Errorf("replay lacks %q:\n%s", w, screen.String())
		}
	}
}
