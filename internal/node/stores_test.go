package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

// swappedStores is the README's example with its two stores swapped: JP
// stays on this host, every other zone goes to Singapore.
const swappedStores = `
recording_stores:
  - name: jp-local
    residency: [JP]
  - name: sg-s3
    residency: ["*"]
    s3:
      endpoint: s3.ap-southeast-1.amazonaws.com
      bucket: sekisho-sg
      access_key_file: s3-access
      secret_key_file: s3-secret
`

func TestRecordingRoutesKeepLocalZonesHere(t *testing.T) {
	valid, _ := nodetest.Config(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "s3-access"), []byte("AK\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "s3-secret"), []byte("SK\n"), 0o600)
	path := filepath.Join(dir, "sekisho.yaml")
	if err := os.WriteFile(path, []byte(valid+swappedStores), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := cfg.RecordingRoutes()
	if err != nil {
		t.Fatal(err)
	}
	if r := rs.For("JP"); r.Store != "jp-local" || !r.Local() {
		t.Errorf("JP recordings go to %q (local %v), want jp-local on this host", r.Store, r.Local())
	}
	for _, z := range []string{"SG", "KR"} {
		if r := rs.For(z); r.Store != "sg-s3" || r.S3 == nil {
			t.Errorf("%s recordings go to %q, want sg-s3", z, r.Store)
		}
	}
}

func TestConfigCheckPrintsStoreOfEachResidency(t *testing.T) {
	valid, _ := nodetest.Config(t)
	for _, tc := range []struct {
		name, stores, want string
	}{
		{
			name:   "swapped",
			stores: swappedStores,
			want: `recordings by residency:
  RESIDENCY  STORE           KEPT IN
  JP         jp-local        local spool /etc/sekisho/recordings
  SG         sg-s3 (as "*")  s3 bucket sekisho-sg at s3.ap-southeast-1.amazonaws.com
`,
		},
		{
			name: "no store for SG",
			stores: `
recording_stores:
  - name: jp-minio
    residency: [JP]
    s3: {endpoint: "127.0.0.1:9000", bucket: jp, access_key_file: a, secret_key_file: s, insecure: true}
`,
			want: `recordings by residency:
  RESIDENCY  STORE     KEPT IN
  JP         jp-minio  s3 bucket jp at 127.0.0.1:9000 (plain http)
  SG         -         local spool /etc/sekisho/recordings (no store names SG)
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig(strings.NewReader(valid+tc.stores), "/etc/sekisho/sekisho.yaml")
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := cfg.WriteStoreTable(&out); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("config check printed\n%s\nwant\n%s", out.String(), tc.want)
			}
		})
	}
}

func TestObjectStoreOverPlainHTTPOffLoopback(t *testing.T) {
	valid, _ := nodetest.Config(t)
	store := func(endpoint, extra string) string {
		return valid + `
recording_stores:
  - name: sg-s3
    residency: ["*"]
    s3:
      endpoint: ` + endpoint + `
      bucket: sekisho-sg
      access_key_file: a
      secret_key_file: s
` + extra
	}
	const insecure = "      insecure: true\n"
	refused := 0
	for _, tc := range []struct {
		text, err string
	}{
		{text: store("s3.ap-southeast-1.amazonaws.com", "")},
		{text: store("10.0.0.9:9000", "")},
		{text: store("127.0.0.1:9000", insecure)},
		{text: store(`"[::1]:9000"`, insecure)},
		{text: store("localhost:9000", insecure)},
		{text: store("10.0.0.9:9000", insecure+"      plain_http_off_loopback: true\n")},
		{text: store("10.0.0.9:9000", insecure), err: "give the store TLS and remove insecure, or, where that network is trusted with them, set plain_http_off_loopback: true"},
		{text: store("minio.sg.example.net:9000", insecure), err: "s3.endpoint minio.sg.example.net:9000 is not on loopback"},
		{text: store("0.0.0.0:9000", insecure), err: "is not on loopback"},
		{text: store("127.0.0.1.example.net:9000", insecure), err: "is not on loopback"},
		{text: store("10.0.0.9:9000", "      plain_http_off_loopback: true\n"), err: "without insecure: true means nothing"},
	} {
		_, err := ParseConfig(strings.NewReader(tc.text), "sekisho.yaml")
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.text[len(valid):], err)
		case tc.err == "":
		case err == nil || !strings.Contains(err.Error(), tc.err):
			t.Errorf("%s: %v; want an error saying %q", tc.text[len(valid):], err, tc.err)
		default:
			if strings.Contains(err.Error(), "is not on loopback") {
				refused++
			}
			nodetest.WantErr(t, err, "sekisho.yaml", strings.Count(valid, "\n")+3, "recording store sg-s3")
		}
	}
	hardening.Report(t, "13", "%d recording stores over plain http to an address off loopback (a private address, a name, 0.0.0.0, a name that starts like loopback) refused by config check, told to give the store TLS or to say plain_http_off_loopback: true; loopback, localhost, TLS and the explicit opt-in accepted", refused)
}
