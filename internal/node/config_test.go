package node

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/hardening"
	"github.com/sekisho/sekisho/internal/node/nodetest"
)

func TestParseValidConfig(t *testing.T) {
	text, keys := nodetest.Config(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "sekisho.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}

	if c.Listen != "127.0.0.1:2222" || c.LogFormat != "json" || c.LogLevel != "info" {
		t.Errorf("top level = %q %q %q", c.Listen, c.LogFormat, c.LogLevel)
	}
	if time.Duration(c.Vault.CertTTL) != 5*time.Minute || time.Duration(c.Vault.Timeout) != 10*time.Second {
		t.Errorf("vault durations = %v %v", time.Duration(c.Vault.CertTTL), time.Duration(c.Vault.Timeout))
	}
	wantSSH := SSHSection{AuthTimeout: Duration(30 * time.Second), MaxAuthTries: 3, DialTimeout: Duration(5 * time.Second),
		EnvAllow: []string{"LANG", "LC_ALL"}}
	if !reflect.DeepEqual(c.SSH, wantSSH) {
		t.Errorf("ssh = %+v, want %+v", c.SSH, wantSSH)
	}

	// Relative paths resolve against the directory of the file.
	for _, tc := range []struct{ in, want string }{
		{c.HostKey, filepath.Join(dir, "host_key")},
		{c.State, filepath.Join(dir, "state", "sekisho.db")},
		{c.Recordings, filepath.Join(dir, "recordings")},
		{"/var/lib/sekisho/x", "/var/lib/sekisho/x"},
		{"", ""},
		{"../up", filepath.Join(filepath.Dir(dir), "up")},
	} {
		if got := c.Path(tc.in); got != tc.want {
			t.Errorf("Path(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	vc := c.VaultConfig()
	want := broker.VaultConfig{Address: "http://127.0.0.1:8200", RoleIDFile: filepath.Join(dir, "vault", "role-id"),
		SecretIDFile: "/etc/sekisho/secret-id", Mount: "ssh", Role: "sekisho", TTL: 5 * time.Minute, Timeout: 10 * time.Second, HostTTL: time.Hour}
	if !reflect.DeepEqual(vc, want) {
		t.Errorf("vaultConfig() = %+v, want %+v", vc, want)
	}

	// A config named without a directory resolves against the working directory.
	c2, err := ParseConfig(strings.NewReader(text), "sekisho.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.Path("state/sekisho.db"); got != filepath.Join("state", "sekisho.db") {
		t.Errorf("Path relative to sekisho.yaml = %q", got)
	}

	// The domain objects.
	techs, targets, policy := c.Domain()
	if len(techs) != 2 || techs[0].Name != "aiko" || techs[0].Affiliate != (broker.Affiliate{Name: "ops-jp", Country: "JP"}) ||
		!reflect.DeepEqual(techs[0].Groups, []string{"dba"}) || techs[1].Affiliate.Country != "CN" {
		t.Fatalf("technicians = %+v", techs)
	}
	if !techs[0].HasKey(keys.Aiko) || techs[0].HasKey(keys.Li) || !techs[1].HasKey(keys.Li) {
		t.Error("technician keys not parsed from the config")
	}
	if len(targets) != 2 {
		t.Fatalf("targets = %+v", targets)
	}
	db, web := targets[0], targets[1]
	if db.Name != "db-jp-01" || db.Address != "10.0.0.1:22" || db.Login != "dbadmin" || db.Residency != "JP" ||
		!reflect.DeepEqual(db.Data, []string{"pii", "messages"}) || db.Labels["env"] != "prod" ||
		len(db.HostKeys) != 1 || !bytes.Equal(db.HostKeys[0].Marshal(), keys.DBHost.Marshal()) || len(db.HostCAs) != 0 {
		t.Errorf("db-jp-01 = %+v", db)
	}
	if web.Address != "10.0.1.1:22" {
		t.Errorf("address without port = %q, want 10.0.1.1:22", web.Address)
	}
	if len(web.HostKeys) != 0 || len(web.HostCAs) != 1 || !bytes.Equal(web.HostCAs[0].Marshal(), keys.HostCA.Marshal()) {
		t.Errorf("web-sg-01 host keys %v, CAs %v", web.HostKeys, web.HostCAs)
	}
	if len(policy.Rules) != 3 || policy.Rules[0].Effect != broker.Deny || *policy.Rules[0].Match.CrossBorder != true ||
		*policy.Rules[1].Match.CrossBorder != false || policy.Rules[2].Match.CrossBorder != nil || policy.Rules[2].Login != "deploy" {
		t.Fatalf("rules = %+v", policy.Rules)
	}
	for _, tc := range []struct {
		tech   int
		target *broker.Target
		effect broker.Effect
		rule   string
		login  string
	}{
		{0, db, broker.Allow, "pii-in-residency", "dbadmin"},
		{1, db, broker.Deny, "pii-stays-in-residency", ""},
		{1, web, broker.Allow, "any-affiliate-to-web", "deploy"},
	} {
		d := policy.Decide(broker.Request{Technician: techs[tc.tech], Target: tc.target, SourceCountry: techs[tc.tech].Affiliate.Country})
		if d.Effect != tc.effect || d.Rule != tc.rule || d.Login != tc.login {
			t.Errorf("%s to %s: {%s %q %q}, want {%s %q %q}", techs[tc.tech].Name, tc.target.Name,
				d.Effect, d.Rule, d.Login, tc.effect, tc.rule, tc.login)
		}
	}
}

func TestParseConfigDefaults(t *testing.T) {
	const minimal = `host_key: k
state: s.db
recordings: rec
vault: {address: "http://v:8200", role: r, role_id_file: a, secret_id_file: b}
`
	c, err := ParseConfig(strings.NewReader(minimal), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2222" || time.Duration(c.Vault.CertTTL) != 5*time.Minute {
		t.Errorf("defaults: listen %q, cert_ttl %v", c.Listen, time.Duration(c.Vault.CertTTL))
	}
}

func TestParseConfigAnchors(t *testing.T) {
	text, _ := nodetest.Config(t)
	// A rule built from an anchored mapping with a merge key.
	text = strings.Replace(text, "  - name: pii-in-residency\n    effect: allow\n    data: [pii]\n",
		"  - &resident\n    name: pii-in-residency\n    effect: allow\n    data: [pii]\n", 1)
	text += "  - <<: *resident\n    name: resident-copy\n"
	c, err := ParseConfig(strings.NewReader(text), "anchors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	last := c.Rules[len(c.Rules)-1]
	if last.Name != "resident-copy" || last.Effect != "allow" || !reflect.DeepEqual(last.Data, []string{"pii"}) ||
		last.CrossBorder == nil || *last.CrossBorder {
		t.Errorf("merged rule = %+v", last)
	}
	if want := lineOf(t, text, "- <<: *resident"); last.line != want {
		t.Errorf("merged rule line = %d, want %d", last.line, want)
	}

	// A misspelt field inside the anchored mapping is refused where it is.
	bad := strings.Replace(text, "    cross_border: false\n", "    cross_boarder: false\n", 1)
	_, err = ParseConfig(strings.NewReader(bad), "anchors.yaml")
	nodetest.WantErr(t, err, "anchors.yaml", lineOf(t, bad, "cross_boarder"), `unknown field "cross_boarder"`)
}

func TestParseConfigEmptyTrailingDocuments(t *testing.T) {
	valid, _ := nodetest.Config(t)
	for _, tail := range []string{"---\n", "...\n", "---\n# only a comment\n", "--- ~\n", "---\n---\n"} {
		if _, err := ParseConfig(strings.NewReader(valid+tail), "tail.yaml"); err != nil {
			t.Errorf("config followed by %q: %v", tail, err)
		}
	}
	if _, err := ParseConfig(strings.NewReader("---\n"+valid), "lead.yaml"); err != nil {
		t.Errorf("config after a leading ---: %v", err)
	}
}

// lineOf returns the 1-based line of the only line of text containing s.
func lineOf(t testing.TB, text, s string) int {
	t.Helper()
	found := 0
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			if found != 0 {
				t.Fatalf("%q occurs on lines %d and %d", s, found, i+1)
			}
			found = i + 1
		}
	}
	if found == 0 {
		t.Fatalf("%q not in the config", s)
	}
	return found
}

func TestParseBrokenConfigs(t *testing.T) {
	valid, _ := nodetest.Config(t)
	certLine := func() string {
		_, pub, _ := nodetest.Key(t, 1, "")
		_, _, ca := nodetest.Key(t, 9, "")
		cert := &ssh.Certificate{Key: pub, CertType: ssh.UserCert, KeyId: "aiko", ValidPrincipals: []string{"aiko"},
			ValidBefore: ssh.CertTimeInfinity}
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))
	}()
	aikoKey, _, _ := nodetest.Key(t, 1, "aiko@laptop")

	// replace returns valid with old replaced by new, which must occur once.
	replace := func(old, new string) string {
		if strings.Count(valid, old) != 1 {
			t.Fatalf("%q occurs %d times in the valid config", old, strings.Count(valid, old))
		}
		return strings.Replace(valid, old, new, 1)
	}

	tests := []struct {
		name  string
		text  string
		at    string // text on the line the error must name; "" for no line
		words []string
	}{
		{
			name:  "upload_only without upload_to",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp]\n    files: upload_only\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{"files: upload_only needs upload_to", "/srv/incoming"},
		},
		{
			name:  "upload_to a relative directory",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp]\n    files: upload_only\n    upload_to: [incoming]\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{`upload_to "incoming"`, "absolute directory"},
		},
		{
			name:  "upload_to the root",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp]\n    files: upload_only\n    upload_to: [/tmp/..]\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{"the root is every directory"},
		},
		{
			name:  "upload_to without upload_only",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp]\n    files: download_only\n    upload_to: [/tmp]\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{"upload_to applies to files: upload_only only"},
		},
		{
			name:  "legacy_transfers without a direction",
			text:  replace("    login: deploy\n", "    login: deploy\n    legacy_transfers: [rsync]\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{"legacy_transfers applies to files: upload_only or download_only only"},
		},
		{
			name:  "legacy_transfers without channel scp",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp]\n    files: download_only\n    legacy_transfers: [rsync]\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{"legacy_transfers needs channel scp"},
		},
		{
			name:  "legacy_transfers of something else",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp, scp]\n    files: download_only\n    legacy_transfers: [ftp]\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{`legacy_transfers "ftp"`, "scp (scp -O) or rsync"},
		},
		{
			name:  "a direction limit with port forwarding",
			text:  replace("    login: deploy\n", "    login: deploy\n    channels: [sftp, port_forward]\n    forward_to: [\"db:5432\"]\n    files: download_only\n"),
			at:    "- name: any-affiliate-to-web",
			words: []string{"only holds without port_forward"},
		},
		{
			name:  "vault source address that is none",
			text:  replace("  cert_ttl: 5m\n", "  cert_ttl: 5m\n  source_addresses: [bastion.internal]\n"),
			words: []string{`vault.source_addresses: "bastion.internal" is not an address or CIDR prefix`},
		},
		{
			name:  "misspelt rule condition",
			text:  replace("    cross_border: false\n", "    cross_boarder: false\n"),
			at:    "cross_boarder",
			words: []string{`unknown field "cross_boarder"`, "cross_border"},
		},
		{
			name:  "misspelt rule condition after a comment",
			text:  replace("    cross_border: true\n", "    # residency first\n\n    cross_boarder: true\n"),
			at:    "cross_boarder",
			words: []string{`unknown field "cross_boarder"`},
		},
		{
			name:  "misspelt condition in a flow mapping",
			text:  valid + "  - {name: flow,\n     effect: deny,\n     tragets: [db-*]}\n",
			at:    "tragets",
			words: []string{`unknown field "tragets"`},
		},
		{
			name:  "unknown target field",
			text:  replace("    residency: SG\n", "    residency: SG\n    trust_on_first_use: true\n"),
			at:    "trust_on_first_use",
			words: []string{`unknown field "trust_on_first_use"`},
		},
		{
			name:  "unknown top-level field",
			text:  replace("log_level: info\n", "log_level: info\nlisten_addr: 0.0.0.0:22\n"),
			at:    "listen_addr",
			words: []string{`unknown field "listen_addr"`},
		},
		{
			name:  "unknown vault field",
			text:  replace("  cert_ttl: 5m\n", "  cert_tl: 5m\n"),
			at:    "cert_tl",
			words: []string{`unknown field "cert_tl"`},
		},
		{
			name:  "wrong type inside an entry",
			text:  replace("    data: [pii, messages]\n", "    data: {pii: true}\n"),
			at:    "data: {pii: true}",
			words: []string{"cannot unmarshal"},
		},
		{
			name:  "entry that is not a mapping",
			text:  replace("targets:\n", "targets:\n  - db-jp-02\n"),
			at:    "- db-jp-02",
			words: []string{"expected a mapping"},
		},
		{
			name:  "technician with unknown affiliate",
			text:  replace("    affiliate: ops-cn\n", "    affiliate: ops-kr\n"),
			at:    "- name: li",
			words: []string{"technician li", `affiliate "ops-kr" is not declared`},
		},
		{
			name:  "country spelt out",
			text:  replace("    country: JP\n", "    country: Japan\n"),
			at:    "- name: ops-jp",
			words: []string{"affiliate ops-jp", `country "Japan" is not an ISO 3166 two-letter code`},
		},
		{
			name:  "lower-case country",
			text:  replace("    country: CN\n", "    country: cn\n"),
			at:    "- name: ops-cn",
			words: []string{`country "cn"`},
		},
		{
			name:  "duplicate affiliate",
			text:  replace("  - name: ops-cn\n", "  - name: ops-jp # twice\n"),
			at:    "ops-jp # twice",
			words: []string{`affiliate "ops-jp" is declared twice`},
		},
		{
			name:  "target without host keys or CAs",
			text:  replace("    host_cas:\n      - "+strings.Split(strings.Split(valid, "    host_cas:\n      - ")[1], "\n")[0]+"\n", ""),
			at:    "- name: web-sg-01",
			words: []string{"target web-sg-01", "host_keys or host_cas is required"},
		},
		{
			name:  "bad host key",
			text:  replace("    host_cas:\n      - ", "    host_cas:\n      - not-a-key\n      - "),
			at:    "- name: web-sg-01",
			words: []string{"target web-sg-01: host_cas entry 1 is not an authorized_keys line"},
		},
		{
			name:  "bad host CA after a good host key",
			text:  replace("    host_cas:\n      - ", "    host_keys:\n      - "+aikoKey+"\n    host_cas:\n      - ssh-ed25519\n      - "),
			at:    "- name: web-sg-01",
			words: []string{"target web-sg-01: host_cas entry 1 is not an authorized_keys line"},
		},
		{
			name:  "target residency spelt out",
			text:  replace("    residency: SG\n", "    residency: Singapore\n"),
			at:    "- name: web-sg-01",
			words: []string{`residency "Singapore"`},
		},
		{
			name:  "target without login",
			text:  replace("    login: www\n", ""),
			at:    "- name: web-sg-01",
			words: []string{"target web-sg-01: login", "is required"},
		},
		{
			name:  "duplicate target",
			text:  replace("  - name: web-sg-01\n", "  - name: db-jp-01 # again\n"),
			at:    "db-jp-01 # again",
			words: []string{`target "db-jp-01" is declared twice`},
		},
		{
			name:  "hostname that is not a DNS name",
			text:  replace("    login: www\n", "    login: www\n    hostnames: [Web_SG.example]\n"),
			at:    "- name: web-sg-01",
			words: []string{`target web-sg-01: hostname "Web_SG.example" is not a lower-case DNS name`},
		},
		{
			name:  "hostname of two targets",
			text:  replace("    login: www\n", "    login: www\n    hostnames: [db-jp-01]\n"),
			at:    "- name: web-sg-01",
			words: []string{`target web-sg-01: hostname "db-jp-01" is already a name of target db-jp-01`},
		},
		{
			name:  "host CA sharing the user CA's mount",
			text:  replace("  cert_ttl: 5m\n", "  cert_ttl: 5m\n  host_mount: ssh\n"),
			at:    "",
			words: []string{`vault.host_mount "ssh" is vault.mount too`},
		},
		{
			name:  "bad effect",
			text:  replace("    effect: allow\n    data: [pii]\n", "    effect: permit\n    data: [pii]\n"),
			at:    "- name: pii-in-residency",
			words: []string{"rule pii-in-residency", `effect "permit"`, "use allow, deny or approval"},
		},
		{
			name:  "duplicate rule",
			text:  replace("  - name: any-affiliate-to-web\n", "  - name: pii-in-residency # again\n"),
			at:    "pii-in-residency # again",
			words: []string{`rule "pii-in-residency" is declared twice`},
		},
		{
			name:  "rule without a name",
			text:  valid + "  - effect: deny\n    targets: [db-*]\n",
			at:    "- effect: deny",
			words: []string{"rule without a name"},
		},
		{
			name:  "rule naming an undeclared technician",
			text:  valid + "  - name: bob-only\n    effect: allow\n    technicians: [bob]\n",
			at:    "- name: bob-only",
			words: []string{`rule bob-only: technician "bob" is not declared`},
		},
		{
			name:  "rule naming an undeclared affiliate",
			text:  valid + "  - name: kr\n    effect: deny\n    affiliates: [ops-kr]\n",
			at:    "- name: kr",
			words: []string{`rule kr: affiliate "ops-kr" is not declared`},
		},
		{
			name:  "rule with a bad target pattern",
			text:  valid + "  - name: glob\n    effect: allow\n    targets: [\"db-[jp\"]\n",
			at:    "- name: glob",
			words: []string{`rule glob: target pattern "db-[jp"`},
		},
		{
			name:  "rule residency spelt out",
			text:  valid + "  - name: jp\n    effect: allow\n    residency: [Japan]\n",
			at:    "- name: jp",
			words: []string{`rule jp: residency "Japan"`},
		},
		{
			name:  "technician name with upper case",
			text:  replace("  - name: aiko\n", "  - name: Aiko\n"),
			at:    "- name: Aiko",
			words: []string{`technician name "Aiko"`},
		},
		{
			name:  "duplicate technician",
			text:  replace("  - name: li\n", "  - name: aiko # twice\n"),
			at:    "aiko # twice",
			words: []string{`technician "aiko" is declared twice`},
		},
		{
			name:  "technician without keys",
			text:  replace("    keys:\n      - "+aikoKey+"\n", ""),
			at:    "- name: aiko",
			words: []string{"technician aiko: no keys"},
		},
		{
			name:  "technician key not an authorized_keys line",
			text:  replace("      - "+aikoKey+"\n", "      - ssh-ed25519 AAAAnotbase64\n"),
			at:    "- name: aiko",
			words: []string{"technician aiko: key 1 is not an authorized_keys line"},
		},
		{
			name:  "technician key is a certificate",
			text:  replace("      - "+aikoKey+"\n", "      - "+aikoKey+"\n      - "+certLine+"\n"),
			at:    "- name: aiko",
			words: []string{"technician aiko: key 2 is a certificate"},
		},
		{
			name:  "cert_ttl too long",
			text:  replace("  cert_ttl: 5m\n", "  cert_ttl: 2h\n"),
			words: []string{"vault.cert_ttl 2h0m0s", "between 1m and 1h"},
		},
		{
			name:  "cert_ttl too short",
			text:  replace("  cert_ttl: 5m\n", "  cert_ttl: 30s\n"),
			words: []string{"vault.cert_ttl 30s", "between 1m and 1h"},
		},
		{
			name:  "negative cert_ttl",
			text:  replace("  cert_ttl: 5m\n", "  cert_ttl: -5m\n"),
			words: []string{"vault.cert_ttl -5m0s"},
		},
		{
			name:  "duration in words",
			text:  replace("  cert_ttl: 5m\n", "  cert_ttl: 5 minutes\n"),
			at:    "cert_ttl: 5 minutes",
			words: []string{`"5 minutes" is not a duration`},
		},
		{
			name:  "duration without unit",
			text:  replace("  dial_timeout: 5s\n", "  dial_timeout: 5\n"),
			at:    "dial_timeout: 5",
			words: []string{`"5" is not a duration`},
		},
		{
			name:  "vault without role",
			text:  replace("  role: sekisho\n", ""),
			words: []string{"vault: address, role, role_id_file and secret_id_file are required"},
		},
		{
			name:  "no host_key",
			text:  replace("host_key: host_key\n", ""),
			words: []string{"host_key is required"},
		},
		{
			name:  "bad log format",
			text:  replace("log_format: json\n", "log_format: xml\n"),
			words: []string{`log_format "xml"`},
		},
		{
			name:  "second document",
			text:  valid + "---\nrules: # second\n  - name: deny-all\n    effect: deny\n",
			at:    "rules: # second",
			words: []string{"second YAML document"},
		},
		{
			name:  "second document with a broken field",
			text:  valid + "---\nlisten: 0.0.0.0:22\n",
			at:    "listen: 0.0.0.0:22",
			words: []string{"second YAML document"},
		},
		{
			name:  "larger than 16 MiB",
			text:  valid + "# " + strings.Repeat("x", 16<<20) + "\n",
			words: []string{"larger than 16 MiB"},
		},
		{
			name:  "empty file",
			text:  "",
			words: []string{"the file is empty"},
		},
		{
			name:  "only comments",
			text:  "# nothing yet\n",
			words: []string{"the file is empty"},
		},
		{
			name:  "invalid YAML: unclosed flow sequence",
			text:  replace("    data: [pii]\n    cross_border: true\n", "    data: [pii\n    cross_border: true\n"),
			at:    "",
			words: []string{"did not find expected"},
		},
		{
			name:  "invalid YAML: tab indentation",
			text:  replace("    country: CN\n", "\tcountry: CN\n"),
			at:    "", // yaml.v3 names the line before the tab
			words: []string{"tab character"},
		},
		{
			name:  "invalid YAML: not a mapping",
			text:  "- just\n- a list\n",
			at:    "- just",
			words: []string{"cannot unmarshal"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tc.text), "broken.yaml")
			line := 0
			if tc.at != "" {
				line = lineOf(t, tc.text, tc.at)
			}
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tc.words)
			}
			t.Log(err)
			if tc.at == "" && strings.HasPrefix(tc.name, "invalid YAML") {
				// The parser names the line where it noticed the problem.
				if !strings.HasPrefix(err.Error(), "broken.yaml:") || strings.HasPrefix(err.Error(), "broken.yaml: ") {
					t.Errorf("error %q names no line", err)
				}
				for _, w := range tc.words {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			nodetest.WantErr(t, err, "broken.yaml", line, tc.words...)
		})
	}
	hardening.Report(t, "2", "%d broken configurations, among them a technician key that is a certificate, trust_on_first_use on a target and cert_ttl outside 1m–1h: all %d refused with an error naming the problem", len(tests), len(tests))
}

func FuzzParseConfig(f *testing.F) {
	valid, _ := nodetest.Config(f)
	f.Add([]byte(valid))
	f.Add([]byte(strings.Replace(valid, "cross_border: false", "cross_boarder: false", 1)))
	f.Add([]byte(strings.Replace(valid, "country: JP", "country: Japan", 1)))
	f.Add([]byte(strings.Replace(valid, "cert_ttl: 5m", "cert_ttl: 5 minutes", 1)))
	f.Add([]byte(strings.Replace(valid, "data: [pii]", "data: [pii", 1)))
	f.Add([]byte("rules:\n  - &a\n    name: x\n  - <<: *a\n    effect: allow\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("rules:\n  - &r {name: a, effect: allow, labels: &l {k: v}}\n  - {<<: [*r, {name: b}], labels: *l}\n"))
	f.Add([]byte("rules:\n  - name: a\n    effect: allow\n    data: &d [[x, x], [x, x]]\n  - {name: b, effect: allow, data: [*d, *d]}\n"))
	f.Add([]byte(""))
	f.Add([]byte("- x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(bytes.NewReader(b), "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml:") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		// What validated must build without surprises.
		techs, targets, policy := c.Domain()
		for _, tech := range techs {
			if len(tech.Keys) == 0 {
				t.Fatalf("technician %s accepted without keys", tech.Name)
			}
			for _, k := range tech.Keys {
				if k == nil {
					t.Fatalf("technician %s has a nil key", tech.Name)
				}
			}
		}
		for _, tg := range targets {
			if len(tg.HostKeys)+len(tg.HostCAs) == 0 {
				t.Fatalf("target %s accepted without host keys", tg.Name)
			}
			for _, k := range append(append([]ssh.PublicKey{}, tg.HostKeys...), tg.HostCAs...) {
				if k == nil {
					t.Fatalf("target %s has a nil host key", tg.Name)
				}
			}
			for _, tech := range techs {
				policy.Decide(broker.Request{Technician: tech, Target: tg, SourceCountry: tech.Affiliate.Country})
			}
		}
		_ = c.VaultConfig()
	})
}

func TestWebSection(t *testing.T) {
	valid, _ := nodetest.Config(t)
	for _, tc := range []struct {
		web, url, err string
	}{
		{web: "", url: ""},
		{web: "web:\n  listen: 127.0.0.1:8443\n", url: "http://127.0.0.1:8443"},
		{web: "web:\n  listen: localhost:8443\n", url: "http://localhost:8443"},
		{web: "web:\n  listen: 0.0.0.0:8443\n  url: https://bastion.example.com/\n", url: "https://bastion.example.com"},
		{web: "web:\n  listen: 10.0.0.5:8443\n  tls_cert: c.pem\n  tls_key: k.pem\n", url: "https://10.0.0.5:8443"},
		{web: "web:\n  listen: 10.0.0.5:8080\n", err: "plain HTTP off loopback"},
		{web: "web:\n  listen: 0.0.0.0:8080\n", err: "give web.url"},
		{web: "web:\n  listen: 8080\n", err: "write host:port"},
		{web: "web:\n  listen: 127.0.0.1:8443\n  tls_cert: c.pem\n", err: "both tls_cert and tls_key"},
		{web: "web:\n  url: https://x.example.com\n", err: "listen is required"},
		{web: "web:\n  listen: 127.0.0.1:8443\n  url: ftp://x\n", err: "web.url"},
		{web: "web:\n  listen: 127.0.0.1:8443\n  url: https://x.example.com/console\n", err: "web.url"},
	} {
		cfg, err := ParseConfig(strings.NewReader(valid+"\n"+tc.web), "sekisho.yaml")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v; want an error saying %q", tc.web, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.web, err)
		case tc.err == "" && cfg.Web.URL != tc.url:
			t.Errorf("%q: url %q, want %q", tc.web, cfg.Web.URL, tc.url)
		}
	}
	bad := strings.Replace(valid, "  - name: aiko\n", "  - name: aiko\n    review_residency: [Singapore]\n", 1)
	if _, err := ParseConfig(strings.NewReader(bad), "sekisho.yaml"); err == nil || !strings.Contains(err.Error(), `review_residency "Singapore"`) {
		t.Errorf("review_residency [Singapore]: %v", err)
	}
}

func TestAuditSyslogSection(t *testing.T) {
	valid, _ := nodetest.Config(t)
	for _, tc := range []struct {
		syslog, err string
		facility    int
	}{
		{syslog: "  syslog:\n    address: udp://127.0.0.1:514\n", facility: 10},
		{syslog: "  syslog:\n    address: tcp://siem.example:601\n    facility: local3\n", facility: 19},
		{syslog: "  syslog:\n    address: unix:///dev/log\n    structured_data_id: bastion@12345\n", facility: 10},
		{syslog: "  syslog:\n    address: siem.example:514\n", err: "audit.syslog.address"},
		{syslog: "  syslog:\n    address: tcp://siem.example\n", err: "tcp://HOST:PORT"},
		{syslog: "  syslog:\n    address: udp://127.0.0.1:514\n    facility: local9\n", err: `"local9" is not a syslog facility`},
		{syslog: "  syslog:\n    address: udp://127.0.0.1:514\n    structured_data_id: bastion\n", err: "NAME@ENTERPRISE-NUMBER"},
		{syslog: "  syslog:\n    address: tcp://siem.example:601\n    tls_ca: ca.pem\n", err: "tls_ca is for a tls:// address"},
		{syslog: "  syslog:\n    address: tls://siem.example:6514\n    tls_ca: no-such-ca.pem\n", err: "audit.syslog.tls_ca"},
	} {
		cfg, err := ParseConfig(strings.NewReader(valid+"\naudit:\n"+tc.syslog), "sekisho.yaml")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v; want an error saying %q", tc.syslog, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.syslog, err)
		case tc.err == "" && cfg.SyslogConfig().Facility != tc.facility:
			t.Errorf("%q: facility %d, want %d", tc.syslog, cfg.SyslogConfig().Facility, tc.facility)
		}
	}
}

func TestModerationBlock(t *testing.T) {
	valid, _ := nodetest.Config(t)
	rule := "    login: deploy\n"
	for _, tc := range []struct {
		block, err string
		want       broker.ModerationSpec
	}{
		{block: "    moderation:\n      from: [dba]\n", want: broker.ModerationSpec{From: []string{"dba"}}},
		{block: "    moderation:\n      from: [dba]\n      affiliates: [ops-jp]\n      data_country: true\n      moderators: 2\n      grace: 45s\n",
			want: broker.ModerationSpec{From: []string{"dba"}, Affiliates: []string{"ops-jp"}, DataCountry: true, Moderators: 2, Grace: 45 * time.Second}},
		{block: "    moderation:\n      affiliates: [ops-jp]\n", err: "moderation.from: name the groups"},
		{block: "    moderation:\n      from: [moderators]\n", err: `no technician is in group "moderators"`},
		{block: "    moderation:\n      from: [dba]\n      affiliates: [ops-xx]\n", err: `"ops-xx" is not an affiliate`},
		{block: "    moderation:\n      from: [dba]\n      moderators: 9\n", err: "use 1 to 5"},
		{block: "    moderation:\n      from: [dba]\n      grace: 1h\n", err: "use 1s to 10m"},
		{block: "    moderation:\n      from: [dba]\n      watchers: 2\n", err: "watchers"},
	} {
		text := strings.Replace(valid, rule, rule+tc.block, 1)
		cfg, err := ParseConfig(strings.NewReader(text), "sekisho.yaml")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %v; want an error saying %q", tc.block, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.block, err)
		case tc.err == "":
			_, _, policy := cfg.Domain()
			got := policy.Rules[len(policy.Rules)-1].Moderation
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%q: moderation %+v, want %+v", tc.block, got, tc.want)
			}
		}
	}
	deny := strings.Replace(valid, "    message: personal data stays", "    moderation:\n      from: [dba]\n    message: personal data stays", 1)
	if _, err := ParseConfig(strings.NewReader(deny), "sekisho.yaml"); err == nil || !strings.Contains(err.Error(), "a deny rule lets no session through") {
		t.Errorf("moderation on a deny rule: %v", err)
	}
}

func TestTransferLimitsAndSourceAddressesParse(t *testing.T) {
	valid, _ := nodetest.Config(t)
	text := strings.Replace(valid, "    login: deploy\n",
		"    login: deploy\n    channels: [sftp, scp]\n    files: upload_only\n    upload_to: [/srv/incoming/, /tmp//drop]\n    legacy_transfers: [scp]\n", 1)
	text = strings.Replace(text, "  cert_ttl: 5m\n", "  cert_ttl: 5m\n  source_addresses: [10.0.0.5, 2001:db8::/64]\n", 1)
	c, err := ParseConfig(strings.NewReader(text), filepath.Join(t.TempDir(), "sekisho.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var lim broker.Limits
	for _, r := range c.policy.Rules {
		if r.Name == "any-affiliate-to-web" {
			lim = r.Limits
		}
	}
	if !slices.Equal(lim.UploadTo, []string{"/srv/incoming", "/tmp/drop"}) || !slices.Equal(lim.Legacy, []string{"scp"}) {
		t.Errorf("limits %+v", lim)
	}
	if lim.TargetSFTPOnly() || !lim.AllowsLegacy(broker.LegacySCP) || lim.AllowsLegacy(broker.LegacyRsync) {
		t.Errorf("limits %+v: sftp only %v, scp %v, rsync %v", lim, lim.TargetSFTPOnly(), lim.AllowsLegacy(broker.LegacySCP), lim.AllowsLegacy(broker.LegacyRsync))
	}
	got := fmt.Sprint(c.VaultConfig().SourceAddresses)
	if got != "[10.0.0.5/32 2001:db8::/64]" {
		t.Errorf("source addresses %s", got)
	}
}
