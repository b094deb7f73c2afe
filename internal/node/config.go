package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/syslog"
	"github.com/sekisho/sekisho/notify"
)

// Config is sekisho's configuration file. Relative paths in it are
// relative to the directory of the file.
type Config struct {
	Listen  string `yaml:"listen"`
	HostKey string `yaml:"host_key"`
	// RecordingKey is the ed25519 key that signs recordings; default
	// recording_key next to the host key. Generated on first start.
	RecordingKey string `yaml:"recording_key"`
	// State is the SQLite file of one node's state; Database puts it on
	// PostgreSQL instead, shared by several nodes. One of them is set.
	State    string          `yaml:"state"`
	Database DatabaseSection `yaml:"database"`
	// NodeName names this node in a cluster: in the session register
	// (which node served each session) and the nodes' heartbeats;
	// default the machine's host name.
	NodeName   string       `yaml:"node_name"`
	Recordings string       `yaml:"recordings"`
	LogLevel   string       `yaml:"log_level"`
	LogFormat  string       `yaml:"log_format"`
	Vault      VaultSection `yaml:"vault"`
	SSH        SSHSection   `yaml:"ssh"`
	// ProxyProtocol trusts PROXY protocol v1/v2 headers from these peers
	// (load balancers) for the client's address; others may not send one.
	ProxyProtocol ProxySection `yaml:"proxy_protocol"`
	GeoIP         string       `yaml:"geoip"` // MaxMind-format country database
	// ForwardResolver is the DNS server (IP:port) that resolves
	// port-forward destinations; empty means the system's resolver.
	ForwardResolver string         `yaml:"forward_resolver"`
	Networks        []NetworkEntry `yaml:"networks"`
	Affiliates      []Affiliate    `yaml:"affiliates"`
	Techs           []Technician   `yaml:"technicians"`
	Targets         []TargetEntry  `yaml:"targets"`
	Rules           []RuleEntry    `yaml:"rules"`
	// AdminGroups are the groups whose members may list and end any live
	// session and revoke any grant; default [admins].
	AdminGroups []string `yaml:"admin_groups"`
	// PowersWithoutMFA are groups whose powers (approving, admin_groups,
	// reviewer_groups) are used with the SSH key alone; everyone else
	// who holds one gives a verification code to log in to sekisho's
	// commands. `policy check` warns of each.
	PowersWithoutMFA []string `yaml:"powers_without_mfa"`
	// ReviewerGroups are the groups whose members, besides admins, may
	// watch live sessions over SSH; default [reviewers].
	ReviewerGroups []string       `yaml:"reviewer_groups"`
	Web            WebSection     `yaml:"web"`
	Notifications  Notifications  `yaml:"notifications"`
	Metrics        MetricsSection `yaml:"metrics"`
	// Audit sends a copy of the audit log elsewhere (the store keeps it
	// all the same).
	Audit AuditSection `yaml:"audit"`
	// RecordingStores say where recordings of each residency zone are
	// kept: an S3-compatible store in that zone, or the local spool.
	RecordingStores []RecordingStoreEntry `yaml:"recording_stores"`
	// RetentionInterval is how often recordings past their retention are
	// deleted; default 1h.
	RetentionInterval Duration `yaml:"retention_interval"`
	// Cluster tunes heartbeats and how soon a silent node is taken for
	// lost, when several nodes share a PostgreSQL state.
	Cluster ClusterSection `yaml:"cluster"`

	path    string
	policy  *broker.Policy // compiled from Rules by validate
	proxies []netip.Prefix // ProxyProtocol.Trusted, parsed
	geo     *broker.Geo    // built from Networks by validate
}

// DatabaseSection puts the state on PostgreSQL, shared by every node
// that names the same database.
type DatabaseSection struct {
	// URL is postgres://user@host:port/database?sslmode=…, without a
	// password: that goes in PasswordFile (or PGPASSWORD, or ~/.pgpass).
	URL          string `yaml:"url"`
	PasswordFile string `yaml:"password_file"`
	// Migrations is auto (the default: a node applies missing schema
	// migrations at start, under a lock) or manual (a node refuses to
	// start on an older schema; the operator runs sekisho db migrate).
	Migrations string `yaml:"migrations"`
	// MaxConnections caps the node's connections (default: pgx's, the
	// larger of 4 and the number of CPUs).
	MaxConnections int `yaml:"max_connections"`
}

// Postgres reports whether the state is on PostgreSQL.
func (c *Config) Postgres() bool { return c.Database.URL != "" }

// PidFile is where a running node writes its process ID: beside the
// SQLite state file, or beside the config when the state is on PostgreSQL.
func (c *Config) PidFile() string {
	if c.Postgres() {
		return filepath.Join(filepath.Dir(c.path), "sekisho.pid")
	}
	return c.Path(c.State) + ".pid"
}

// WebSection configures the web console; it is off without listen.
type WebSection struct {
	// Listen is the console's address (host:port).
	Listen string `yaml:"listen"`
	// URL is the console's address as browsers reach it, for sign-in
	// links; default http://LISTEN (https:// with a certificate).
	URL string `yaml:"url"`
	// TLSCert and TLSKey are PEM files; without them the console speaks
	// plain HTTP, for loopback or behind a TLS-terminating proxy.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// IdleTimeout and SessionTTL end browser sessions (default 30m, 8h).
	IdleTimeout Duration `yaml:"idle_timeout"`
	SessionTTL  Duration `yaml:"session_ttl"`
	// OIDC offers single sign-on through an OpenID provider beside the
	// links `ssh … login` prints; absent: links only.
	OIDC *OIDCSection `yaml:"oidc"`
}

// OIDCSection configures the console's single sign-on. The provider
// names the technician (TechnicianClaim) and lets them use at most the
// console roles its groups are mapped to (Roles); sekisho's own config
// says which roles they have.
type OIDCSection struct {
	// Name is shown on the sign-in button; default: the issuer's host.
	Name   string `yaml:"name"`
	Issuer string `yaml:"issuer"`
	// ClientID and ClientSecretFile are the console's registration with
	// the provider; the secret is read from the file, never written in
	// the config.
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is the callback registered with the provider; default
	// <web.url>/oidc/callback. PostLogoutRedirectURL is where the
	// provider sends the browser after signing out there; default
	// <web.url>/signed-out.
	RedirectURL           string `yaml:"redirect_url"`
	PostLogoutRedirectURL string `yaml:"post_logout_redirect_url"`
	// Scopes asked for; default [openid, profile, email, groups].
	Scopes []string `yaml:"scopes"`
	// TechnicianClaim is the ID token claim naming the sekisho
	// technician (required); GroupsClaim the claim listing the person's
	// groups (default groups).
	TechnicianClaim string `yaml:"technician_claim"`
	GroupsClaim     string `yaml:"groups_claim"`
	// Roles maps admin, approver and reviewer to the provider's groups
	// that let a person use that role.
	Roles map[string][]string `yaml:"roles"`

	secret string // read from ClientSecretFile by validate
	line   int
}

// UnmarshalYAML keeps the section's line for error messages.
func (o *OIDCSection) UnmarshalYAML(n *yaml.Node) error {
	type plain OIDCSection
	if err := n.Decode((*plain)(o)); err != nil {
		return err
	}
	o.line = n.Line
	return nil
}

// AuditSection configures copies of the audit log.
type AuditSection struct {
	Syslog *SyslogSection `yaml:"syslog"`
}

// SyslogSection sends every audit event to a syslog collector as an RFC
// 5424 message (docs/AUDIT.md).
type SyslogSection struct {
	// Address is udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or
	// unix:///dev/log.
	Address string `yaml:"address"`
	// Facility is a syslog facility's name; default authpriv.
	Facility string `yaml:"facility"`
	// StructuredDataID names the structured data element; default
	// sekisho@32473 (the documentation enterprise number).
	StructuredDataID string `yaml:"structured_data_id"`
	// TLSCA is a PEM file of the CAs that may sign a tls:// collector's
	// certificate; default the system's. TLSServerName is the name its
	// certificate must carry; default the address's host.
	TLSCA         string `yaml:"tls_ca"`
	TLSServerName string `yaml:"tls_server_name"`

	facility int
	roots    *x509.CertPool
}

// SyslogConfig is the sender's configuration of the audit.syslog
// section; nil without one.
func (c *Config) SyslogConfig() *syslog.Config {
	s := c.Audit.Syslog
	if s == nil {
		return nil
	}
	out := &syslog.Config{Address: s.Address, Facility: s.facility, Hostname: c.NodeName, SDID: s.StructuredDataID}
	if strings.HasPrefix(s.Address, "tls://") {
		out.TLS = &tls.Config{RootCAs: s.roots, ServerName: s.TLSServerName, MinVersion: tls.VersionTLS12}
	}
	return out
}

func (c *Config) validateAudit() error {
	s := c.Audit.Syslog
	if s == nil {
		return nil
	}
	if _, _, err := syslog.ParseAddress(s.Address); err != nil {
		return c.errf(0, "audit.syslog.address: %v", err)
	}
	if s.Facility == "" {
		s.Facility = "authpriv"
	}
	f, ok := syslog.Facilities[s.Facility]
	if !ok {
		return c.errf(0, "audit.syslog.facility: %q is not a syslog facility (authpriv, auth, security, local0 … local7, …)", s.Facility)
	}
	s.facility = f
	if s.StructuredDataID != "" && !sdIDRe.MatchString(s.StructuredDataID) {
		return c.errf(0, "audit.syslog.structured_data_id: %q: write NAME@ENTERPRISE-NUMBER, e.g. sekisho@32473", s.StructuredDataID)
	}
	if s.TLSCA != "" {
		if !strings.HasPrefix(s.Address, "tls://") {
			return c.errf(0, "audit.syslog.tls_ca is for a tls:// address")
		}
		b, err := os.ReadFile(c.Path(s.TLSCA))
		if err != nil {
			return c.errf(0, "audit.syslog.tls_ca: %v", err)
		}
		s.roots = x509.NewCertPool()
		if !s.roots.AppendCertsFromPEM(b) {
			return c.errf(0, "audit.syslog.tls_ca %s: no PEM certificate in it", s.TLSCA)
		}
	}
	return nil
}

var sdIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,20}@[0-9]+(\.[0-9]+)*$`)

// Notifications configures who is told of access requests.
type Notifications struct {
	Webhooks []WebhookEntry `yaml:"webhooks"`
}

// WebhookEntry is one webhook: a generic JSON body or a Slack-compatible one.
type WebhookEntry struct {
	Name    string            `yaml:"name"`
	URL     string            `yaml:"url"`
	Format  string            `yaml:"format"` // json (default) or slack
	Events  []string          `yaml:"events"` // default: all
	Headers map[string]string `yaml:"headers"`
	Timeout Duration          `yaml:"timeout"`
	// Attempts and Backoff bound the retries: Attempts tries in all, the
	// first retry after Backoff, doubling.
	Attempts int      `yaml:"attempts"`
	Backoff  Duration `yaml:"backoff"`
	// PlainHTTPOffLoopback lets an http:// URL name another host: the
	// operator says the network between is trusted with what webhooks
	// carry (names, reasons, request numbers).
	PlainHTTPOffLoopback bool `yaml:"plain_http_off_loopback"`
	// SecretFile holds the secret (whsec_ and base64, the Standard
	// Webhooks format) that signs every request; none: unsigned.
	SecretFile string `yaml:"secret_file"`
	line       int
	secret     []byte // read from SecretFile by validate
}

func (w *WebhookEntry) UnmarshalYAML(n *yaml.Node) error {
	type plain WebhookEntry
	w.line = n.Line
	return decodeStrict(n, (*plain)(w))
}

// RecordingStoreEntry is where the recordings of some residency zones go.
type RecordingStoreEntry struct {
	Name string `yaml:"name"`
	// Residency lists the zones (target residency country codes) stored
	// here; "*" matches every zone no other entry names.
	Residency []string `yaml:"residency"`
	// S3 is an S3-compatible store; without it the recordings stay in the
	// local spool (the recordings directory).
	S3 *S3Entry `yaml:"s3"`
	// Retention deletes recordings this long after they ended, unless
	// under a legal hold; zero keeps them.
	Retention Duration `yaml:"retention"`
	line      int
}

func (r *RecordingStoreEntry) UnmarshalYAML(n *yaml.Node) error {
	type plain RecordingStoreEntry
	r.line = n.Line
	return decodeStrict(n, (*plain)(r))
}

// S3Entry configures an S3-compatible recording store.
type S3Entry struct {
	Endpoint      string `yaml:"endpoint"` // host:port
	Bucket        string `yaml:"bucket"`
	Region        string `yaml:"region"`
	AccessKeyFile string `yaml:"access_key_file"`
	SecretKeyFile string `yaml:"secret_key_file"`
	Insecure      bool   `yaml:"insecure"`   // plain http (a store on loopback)
	KeepLocal     bool   `yaml:"keep_local"` // keep the spool copy once uploaded
	// PlainHTTPOffLoopback lets insecure reach a store off loopback: the
	// operator says the network between them is trusted with recordings.
	PlainHTTPOffLoopback bool `yaml:"plain_http_off_loopback"`
	// StallTimeout ends a live session whose chunks the store has not
	// taken for this long; default 30s.
	StallTimeout Duration `yaml:"stall_timeout"`
}

// MetricsSection configures the Prometheus endpoint.
type MetricsSection struct {
	// Listen is host:port for /metrics; empty serves no metrics.
	Listen string `yaml:"listen"`
}

// ApprovalEntry is the approval block of an approval rule.
type ApprovalEntry struct {
	Approvals      int      `yaml:"approvals"`
	From           []string `yaml:"from"`
	OtherAffiliate bool     `yaml:"other_affiliate"`
	PendingFor     Duration `yaml:"pending_for"`
	MaxGrant       Duration `yaml:"max_grant"`
}

// ModerationEntry is a rule's moderation block: its sessions run only
// while enough moderators watch.
type ModerationEntry struct {
	// From are the groups whose members may moderate.
	From []string `yaml:"from"`
	// Affiliates, if set, are the only affiliates moderators may be of.
	Affiliates []string `yaml:"affiliates"`
	// DataCountry: only moderators of an affiliate in the target's
	// residency.
	DataCountry bool     `yaml:"data_country"`
	Moderators  int      `yaml:"moderators"`
	Grace       Duration `yaml:"grace"`
}

// ProxySection lists the load balancers allowed to send PROXY headers.
type ProxySection struct {
	Trusted []string `yaml:"trusted"` // addresses or CIDR prefixes
}

// NetworkEntry names address ranges whose country the operator knows:
// affiliate offices, VPN egress ranges.
type NetworkEntry struct {
	Name    string   `yaml:"name"`
	Country string   `yaml:"country"`
	CIDRs   []string `yaml:"cidrs"`
	line    int
}

func (n *NetworkEntry) UnmarshalYAML(node *yaml.Node) error {
	type plain NetworkEntry
	n.line = node.Line
	return decodeStrict(node, (*plain)(n))
}

// VaultSection configures the Vault SSH secrets engine.
type VaultSection struct {
	Address      string   `yaml:"address"`
	RoleIDFile   string   `yaml:"role_id_file"`
	SecretIDFile string   `yaml:"secret_id_file"`
	AppRoleMount string   `yaml:"approle_mount"`
	Mount        string   `yaml:"mount"`
	Role         string   `yaml:"role"`
	CertTTL      Duration `yaml:"cert_ttl"`
	Timeout      Duration `yaml:"timeout"`
	TransitMount string   `yaml:"transit_mount"`
	TOTPKey      string   `yaml:"totp_key"`
	// HostMount is the SSH secrets engine mount of the host CA that signs
	// the certificates sekisho presents as a target through ProxyJump
	// (default ssh-host); HostRole its signing role (default
	// sekisho-host); HostCertTTL their lifetime (default 1h).
	HostMount   string   `yaml:"host_mount"`
	HostRole    string   `yaml:"host_role"`
	HostCertTTL Duration `yaml:"host_cert_ttl"`
	// SourceAddresses are the addresses (or CIDR prefixes) sekisho
	// reaches targets from, written into every certificate's
	// source-address option; default: the local address of each
	// session's own connection to its target. Set them when a NAT lies
	// between sekisho and the targets.
	SourceAddresses []string `yaml:"source_addresses"`

	sourcePrefixes []netip.Prefix
}

// SSHSection tunes the SSH server.
type SSHSection struct {
	AuthTimeout  Duration `yaml:"auth_timeout"`
	MaxAuthTries int      `yaml:"max_auth_tries"`
	DialTimeout  Duration `yaml:"dial_timeout"`
	EnvAllow     []string `yaml:"env_allow"`
	// ProxyJump, on unless set to false, answers a technician's ssh -J
	// to a target as the target (see the README's ProxyJump section).
	ProxyJump *bool `yaml:"proxy_jump"`
	// Each leg of a session answers a keepalive every interval (default
	// 30s) or the session ends after count_max (default 3) unanswered.
	KeepaliveInterval Duration `yaml:"keepalive_interval"`
	KeepaliveCountMax int      `yaml:"keepalive_count_max"`
	// Connections still in their handshake or authentication: in all
	// (default 1000) and per source address (default 50).
	MaxUnauthenticated          int `yaml:"max_unauthenticated"`
	MaxUnauthenticatedPerSource int `yaml:"max_unauthenticated_per_source"`
	// Failed authentication attempts from one source within a minute
	// before it is refused for the rest of it (default 100).
	MaxAuthFailuresPerSource int `yaml:"max_auth_failures_per_source"`
}

// Affiliate is an affiliate company entry.
type Affiliate struct {
	Name    string `yaml:"name"`
	Country string `yaml:"country"`
	line    int
}

// Technician is a technician entry.
type Technician struct {
	Name       string   `yaml:"name"`
	Affiliate  string   `yaml:"affiliate"`
	Groups     []string `yaml:"groups"`
	Keys       []string `yaml:"keys"`
	RequireMFA bool     `yaml:"require_mfa"`
	// ReviewResidency limits what this person sees of sessions and
	// recordings in the web console to these residencies; absent: all.
	ReviewResidency []string `yaml:"review_residency"`
	line            int
}

// TargetEntry is a target entry.
type TargetEntry struct {
	Name string `yaml:"name"`
	// Hostnames are further names the target answers to through
	// ProxyJump, such as db-jp-01.db.example.
	Hostnames []string          `yaml:"hostnames"`
	Address   string            `yaml:"address"`
	Login     string            `yaml:"login"`
	HostKeys  []string          `yaml:"host_keys"`
	HostCAs   []string          `yaml:"host_cas"`
	Residency string            `yaml:"residency"`
	Zone      string            `yaml:"zone"`
	Data      []string          `yaml:"data"`
	Labels    map[string]string `yaml:"labels"`
	line      int
}

// RuleEntry is a rule entry.
type RuleEntry struct {
	Name        string            `yaml:"name"`
	Effect      string            `yaml:"effect"`
	Technicians []string          `yaml:"technicians"`
	Affiliates  []string          `yaml:"affiliates"`
	Targets     []string          `yaml:"targets"`
	Residency   []string          `yaml:"residency"`
	Data        []string          `yaml:"data"`
	Labels      map[string]string `yaml:"labels"`
	CrossBorder *bool             `yaml:"cross_border"`
	Hours       string            `yaml:"hours"`
	Days        []string          `yaml:"days"`
	When        string            `yaml:"when"`
	Login       string            `yaml:"login"`
	Message     string            `yaml:"message"`
	Channels    []string          `yaml:"channels"`
	Files       string            `yaml:"files"`
	MaxDuration Duration          `yaml:"max_duration"`
	RequireMFA  bool              `yaml:"require_mfa"`
	ForwardTo   []string          `yaml:"forward_to"`
	UploadTo    []string          `yaml:"upload_to"`
	Legacy      []string          `yaml:"legacy_transfers"`
	Approval    *ApprovalEntry    `yaml:"approval"`
	Moderation  *ModerationEntry  `yaml:"moderation"`
	line        int
	whenLine    int
}

func (a *Affiliate) UnmarshalYAML(n *yaml.Node) error {
	type plain Affiliate
	a.line = n.Line
	return decodeStrict(n, (*plain)(a))
}

func (t *Technician) UnmarshalYAML(n *yaml.Node) error {
	type plain Technician
	t.line = n.Line
	return decodeStrict(n, (*plain)(t))
}

func (t *TargetEntry) UnmarshalYAML(n *yaml.Node) error {
	type plain TargetEntry
	t.line = n.Line
	return decodeStrict(n, (*plain)(t))
}

func (r *RuleEntry) UnmarshalYAML(n *yaml.Node) error {
	type plain RuleEntry
	r.line = n.Line
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "when" {
			r.whenLine = n.Content[i+1].Line
		}
	}
	return decodeStrict(n, (*plain)(r))
}

// decodeStrict decodes n into v, refusing unknown fields: a misspelt
// condition in a rule must not silently widen it. The node is decoded in
// place, so that errors name absolute lines of the file.
func decodeStrict(n *yaml.Node, v any) error {
	m := n
	if m.Kind == yaml.AliasNode && m.Alias != nil {
		m = m.Alias
	}
	if m.Kind != yaml.MappingNode {
		return &lineError{line: n.Line, msg: "expected a mapping of fields (name: ..., ...) here"}
	}
	if err := checkFields(n, reflect.TypeOf(v), map[checked]bool{}); err != nil {
		return err
	}
	return n.Decode(v)
}

// lineError is an error at a line of the config file.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

type checked struct {
	n *yaml.Node
	t reflect.Type
}

// checkFields refuses mapping keys that name no field of the struct they
// decode into, at any depth of n. Each node is visited once per type, so
// aliases neither loop nor multiply the work.
func checkFields(n *yaml.Node, t reflect.Type, seen map[checked]bool) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || seen[checked{n, t}] {
		return nil
	}
	seen[checked{n, t}] = true
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkFields(c, t, seen); err != nil {
				return err
			}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports the type mismatch
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
				// "<<: *a" or "<<: [*a, *b]" merges the keys of other mappings.
				merged := []*yaml.Node{v}
				if v.Kind == yaml.SequenceNode {
					merged = v.Content
				}
				for _, m := range merged {
					if err := checkFields(m, t, seen); err != nil {
						return err
					}
				}
				continue
			}
			ft, ok := fields[k.Value]
			if !ok || k.Kind != yaml.ScalarNode {
				return &lineError{line: k.Line, msg: fmt.Sprintf("unknown field %q (known fields: %s)", k.Value, strings.Join(names, ", "))}
			}
			if err := checkFields(v, ft, seen); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for _, c := range n.Content {
				if err := checkFields(c, t.Elem(), seen); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				if err := checkFields(n.Content[i], t.Elem(), seen); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

var yamlLineRe = regexp.MustCompile(`^line (\d+): (?s:(.*))$`)

// yamlError turns an error of the YAML decoder into "name:LINE: message"
// lines.
func yamlError(name string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s", name, le.line, le.msg)
	}
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		if sm := yamlLineRe.FindStringSubmatch(m); sm != nil {
			out[i] = fmt.Sprintf("%s:%s: %s", name, sm[1], sm[2])
		} else {
			out[i] = fmt.Sprintf("%s: %s", name, m)
		}
	}
	return errors.New(strings.Join(out, "\n"))
}

// Duration is a time.Duration written as "5m", "30s".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return &lineError{line: n.Line, msg: fmt.Sprintf("%q is not a duration (write e.g. 30s, 5m, 1h)", n.Value)}
	}
	*d = Duration(v)
	return nil
}

// LoadConfig reads and validates the config file at path.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return ParseConfig(f, path)
}

// ParseConfig parses and validates a config read from r; name is used in
// error messages and to resolve relative paths.
func ParseConfig(r io.Reader, name string) (*Config, error) {
	const maxSize = 16 << 20
	b, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > maxSize {
		// Never act on a truncated policy.
		return nil, fmt.Errorf("%s: the file is larger than %d MiB", name, maxSize>>20)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty", name)
		}
		return nil, yamlError(name, err)
	}
	// Rules in a second document would be silently ignored.
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, yamlError(name, err)
		}
		if len(extra.Content) > 0 && extra.Content[0].ShortTag() != "!!null" {
			return nil, yamlError(name, &lineError{line: extra.Content[0].Line,
				msg: "a second YAML document (after ---) is not allowed; put everything in one"})
		}
	}
	var c Config
	if err := checkFields(&doc, reflect.TypeOf(c), map[checked]bool{}); err != nil {
		return nil, yamlError(name, err)
	}
	if err := doc.Decode(&c); err != nil {
		return nil, yamlError(name, err)
	}
	c.path = name
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// File returns the name of the config file, as given to LoadConfig or
// ParseConfig: what messages about the config name.
func (c *Config) File() string { return c.path }

// Geo returns the networks and country database the config names, built
// when it was validated.
func (c *Config) Geo() *broker.Geo { return c.geo }

// Path resolves p relative to the config file's directory.
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

var (
	nameRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	countryRe = regexp.MustCompile(`^[A-Z]{2}$`)
	// hostnameRe is a lower-case DNS name of one label or more.
	hostnameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

func (c *Config) errf(line int, format string, args ...any) error {
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", c.path, line, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s: %s", c.path, fmt.Sprintf(format, args...))
}

func (c *Config) validate() (err error) {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:2222"
	}
	if c.HostKey == "" {
		return c.errf(0, "host_key is required (a file path; it is generated on first start if missing)")
	}
	if c.RecordingKey == "" {
		c.RecordingKey = filepath.Join(filepath.Dir(c.HostKey), "recording_key")
	}
	if err := c.validateDatabase(); err != nil {
		return err
	}
	if err := c.validateCluster(); err != nil {
		return err
	}
	if c.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return c.errf(0, "node_name is required: the host name cannot be read (%v)", err)
		}
		c.NodeName = strings.ToLower(host)
	}
	if !nameRe.MatchString(c.NodeName) {
		return c.errf(0, "node_name %q: use lower-case letters, digits, '.', '_' and '-'", c.NodeName)
	}
	if c.Recordings == "" {
		return c.errf(0, "recordings is required (directory for session recordings)")
	}
	switch c.LogFormat {
	case "", "json", "text":
	default:
		return c.errf(0, "log_format %q: use json or text", c.LogFormat)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return c.errf(0, "log_level %q: use debug, info, warn or error", c.LogLevel)
	}
	v := &c.Vault
	if v.Address == "" || v.Role == "" || v.RoleIDFile == "" || v.SecretIDFile == "" {
		return c.errf(0, "vault: address, role, role_id_file and secret_id_file are required")
	}
	if v.CertTTL == 0 {
		v.CertTTL = Duration(5 * time.Minute)
	}
	for name, d := range map[string]Duration{"vault.timeout": v.Timeout, "ssh.auth_timeout": c.SSH.AuthTimeout, "ssh.dial_timeout": c.SSH.DialTimeout, "ssh.keepalive_interval": c.SSH.KeepaliveInterval} {
		if d < 0 {
			return c.errf(0, "%s %s: a timeout cannot be negative", name, time.Duration(d))
		}
	}
	if c.SSH.MaxUnauthenticated < 0 {
		return c.errf(0, "ssh.max_unauthenticated %d: use a positive number (default 1000)", c.SSH.MaxUnauthenticated)
	}
	if c.SSH.MaxAuthFailuresPerSource < 0 {
		return c.errf(0, "ssh.max_auth_failures_per_source %d: use a positive number (default 100)", c.SSH.MaxAuthFailuresPerSource)
	}
	if c.SSH.MaxUnauthenticatedPerSource < 0 {
		return c.errf(0, "ssh.max_unauthenticated_per_source %d: use a positive number (default 50)", c.SSH.MaxUnauthenticatedPerSource)
	}
	if c.SSH.KeepaliveCountMax < 0 {
		return c.errf(0, "ssh.keepalive_count_max %d: use a positive number (default 3)", c.SSH.KeepaliveCountMax)
	}
	if c.SSH.MaxAuthTries < 0 {
		return c.errf(0, "ssh.max_auth_tries %d: use a positive number (default 6)", c.SSH.MaxAuthTries)
	}
	if time.Duration(v.CertTTL) < time.Minute || time.Duration(v.CertTTL) > time.Hour {
		return c.errf(0, "vault.cert_ttl %s: certificates must live between 1m and 1h", time.Duration(v.CertTTL))
	}
	if v.HostCertTTL == 0 {
		v.HostCertTTL = Duration(broker.DefaultHostCertTTL)
	}
	if time.Duration(v.HostCertTTL) < 5*time.Minute || time.Duration(v.HostCertTTL) > 24*time.Hour {
		return c.errf(0, "vault.host_cert_ttl %s: host certificates must live between 5m and 24h", time.Duration(v.HostCertTTL))
	}
	if v.HostMount != "" && v.HostMount == v.Mount {
		return c.errf(0, "vault.host_mount %q is vault.mount too: host and user certificates must not share a CA", v.HostMount)
	}
	v.sourcePrefixes = nil
	for _, p := range v.SourceAddresses {
		prefix, ok := parsePrefix(p)
		if !ok {
			return c.errf(0, "vault.source_addresses: %q is not an address or CIDR prefix", p)
		}
		v.sourcePrefixes = append(v.sourcePrefixes, prefix)
	}

	for _, p := range c.ProxyProtocol.Trusted {
		prefix, ok := parsePrefix(p)
		if !ok {
			return c.errf(0, "proxy_protocol.trusted: %q is not an address or CIDR prefix", p)
		}
		c.proxies = append(c.proxies, prefix)
	}
	if c.ForwardResolver != "" {
		if _, err := netip.ParseAddrPort(c.ForwardResolver); err != nil {
			return c.errf(0, "forward_resolver %q: write the DNS server as IP:port, e.g. 10.0.0.2:53", c.ForwardResolver)
		}
	}
	var networks []*broker.Network
	for _, n := range c.Networks {
		if !nameRe.MatchString(n.Name) {
			return c.errf(n.line, "network name %q: use a-z, 0-9, '.', '_', '-'", n.Name)
		}
		if !countryRe.MatchString(n.Country) {
			return c.errf(n.line, "network %s: country %q is not an ISO 3166 two-letter code such as JP", n.Name, n.Country)
		}
		if len(n.CIDRs) == 0 {
			return c.errf(n.line, "network %s: no cidrs", n.Name)
		}
		bn := &broker.Network{Name: n.Name, Country: n.Country}
		for _, cidr := range n.CIDRs {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				return c.errf(n.line, "network %s: %q is not a CIDR prefix such as 203.0.113.0/24", n.Name, cidr)
			}
			bn.Prefixes = append(bn.Prefixes, p)
		}
		networks = append(networks, bn)
	}
	var geoDB *maxminddb.Reader
	if c.GeoIP != "" {
		db, oerr := broker.OpenGeoIP(c.Path(c.GeoIP))
		if oerr != nil {
			return c.errf(0, "geoip: %v", oerr)
		}
		geoDB = db
		defer func() {
			if err != nil {
				db.Close() // a config that does not load keeps nothing open
			}
		}()
	}
	c.geo = broker.NewGeo(networks, geoDB)

	affiliates := map[string]bool{}
	for _, a := range c.Affiliates {
		if !nameRe.MatchString(a.Name) {
			return c.errf(a.line, "affiliate name %q: use a-z, 0-9, '.', '_', '-'", a.Name)
		}
		if affiliates[a.Name] {
			return c.errf(a.line, "affiliate %q is declared twice", a.Name)
		}
		if !countryRe.MatchString(a.Country) {
			return c.errf(a.line, "affiliate %s: country %q is not an ISO 3166 two-letter code such as JP", a.Name, a.Country)
		}
		affiliates[a.Name] = true
	}
	techs := map[string]bool{}
	keyOwners := map[string]string{}
	for _, t := range c.Techs {
		if !nameRe.MatchString(t.Name) {
			return c.errf(t.line, "technician name %q: use a-z, 0-9, '.', '_', '-', starting with a letter or digit", t.Name)
		}
		if techs[t.Name] {
			return c.errf(t.line, "technician %q is declared twice", t.Name)
		}
		techs[t.Name] = true
		if !affiliates[t.Affiliate] {
			return c.errf(t.line, "technician %s: affiliate %q is not declared under affiliates", t.Name, t.Affiliate)
		}
		if len(t.Keys) == 0 {
			return c.errf(t.line, "technician %s: no keys (add an authorized_keys line under keys)", t.Name)
		}
		for _, z := range t.ReviewResidency {
			if !countryRe.MatchString(z) {
				return c.errf(t.line, "technician %s: review_residency %q is not an ISO 3166 two-letter code such as SG", t.Name, z)
			}
		}
		for i, k := range t.Keys {
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				return c.errf(t.line, "technician %s: key %d is not an authorized_keys line: %v", t.Name, i+1, err)
			}
			if _, isCert := key.(*ssh.Certificate); isCert {
				return c.errf(t.line, "technician %s: key %d is a certificate; register the plain public key", t.Name, i+1)
			}
			// A key names one person: the audit log must say who it was.
			fp := ssh.FingerprintSHA256(key)
			if owner, dup := keyOwners[fp]; dup && owner != t.Name {
				return c.errf(t.line, "technician %s: key %d (%s) is also registered for %s; each key must belong to one technician", t.Name, i+1, fp, owner)
			}
			keyOwners[fp] = t.Name
		}
	}
	targets := map[string]bool{}
	jumpNames := map[string]string{} // name or hostname: its target
	for i := range c.Targets {
		t := &c.Targets[i]
		if !nameRe.MatchString(t.Name) {
			return c.errf(t.line, "target name %q: use a-z, 0-9, '.', '_', '-', starting with a letter or digit", t.Name)
		}
		if targets[t.Name] {
			return c.errf(t.line, "target %q is declared twice", t.Name)
		}
		targets[t.Name] = true
		for _, h := range t.Hostnames {
			if !hostnameRe.MatchString(h) {
				return c.errf(t.line, "target %s: hostname %q is not a lower-case DNS name such as db-jp-01.db.example", t.Name, h)
			}
			if jumpNames[h] != "" {
				return c.errf(t.line, "target %s: hostname %q is already a name of target %s", t.Name, h, jumpNames[h])
			}
			jumpNames[h] = t.Name
		}
		if other := jumpNames[t.Name]; other != "" && other != t.Name {
			return c.errf(t.line, "target %s: its name is already a hostname of target %s", t.Name, other)
		}
		jumpNames[t.Name] = t.Name
		if t.Address == "" {
			return c.errf(t.line, "target %s: address (host:port) is required", t.Name)
		}
		if !strings.Contains(t.Address, ":") {
			t.Address += ":22"
		}
		if t.Login == "" {
			return c.errf(t.line, "target %s: login (the account on the target) is required", t.Name)
		}
		if !countryRe.MatchString(t.Residency) {
			return c.errf(t.line, "target %s: residency %q is not an ISO 3166 two-letter code such as JP", t.Name, t.Residency)
		}
		if t.Zone != "" {
			if _, err := time.LoadLocation(t.Zone); err != nil {
				return c.errf(t.line, "target %s: zone %q is not an IANA time zone such as Asia/Tokyo", t.Name, t.Zone)
			}
		}
		if len(t.HostKeys) == 0 && len(t.HostCAs) == 0 {
			return c.errf(t.line, "target %s: host_keys or host_cas is required (sekisho never trusts a host key on first use; get it with ssh-keyscan and check it)", t.Name)
		}
		for _, l := range []struct {
			field string
			keys  []string
		}{{"host_keys", t.HostKeys}, {"host_cas", t.HostCAs}} {
			for i, k := range l.keys {
				if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
					return c.errf(t.line, "target %s: %s entry %d is not an authorized_keys line: %v", t.Name, l.field, i+1, err)
				}
			}
		}
	}
	groups := map[string]bool{}
	for _, t := range c.Techs {
		for _, g := range t.Groups {
			groups[g] = true
		}
	}
	if err := c.validateNotifications(); err != nil {
		return err
	}
	if err := c.validateAudit(); err != nil {
		return err
	}
	if err := c.validateStores(); err != nil {
		return err
	}
	if c.AdminGroups == nil {
		c.AdminGroups = []string{"admins"}
	}
	if c.ReviewerGroups == nil {
		c.ReviewerGroups = []string{"reviewers"}
	}
	rules := map[string]bool{}
	for _, r := range c.Rules {
		if r.Name == "" {
			return c.errf(r.line, "rule without a name")
		}
		if rules[r.Name] {
			return c.errf(r.line, "rule %q is declared twice", r.Name)
		}
		rules[r.Name] = true
		switch broker.Effect(r.Effect) {
		case broker.Allow, broker.Deny, broker.Approval:
		default:
			return c.errf(r.line, "rule %s: effect %q: use allow, deny or approval", r.Name, r.Effect)
		}
		for _, n := range r.Technicians {
			if !techs[n] {
				return c.errf(r.line, "rule %s: technician %q is not declared", r.Name, n)
			}
		}
		for _, n := range r.Affiliates {
			if !affiliates[n] {
				return c.errf(r.line, "rule %s: affiliate %q is not declared", r.Name, n)
			}
		}
		for _, p := range r.Targets {
			if _, err := filepath.Match(p, ""); err != nil {
				return c.errf(r.line, "rule %s: target pattern %q: %v", r.Name, p, err)
			}
		}
		for _, z := range r.Residency {
			if !countryRe.MatchString(z) {
				return c.errf(r.line, "rule %s: residency %q is not a two-letter country code", r.Name, z)
			}
		}
		for _, ch := range r.Channels {
			switch ch {
			case broker.ChannelShell, broker.ChannelExec, broker.ChannelSFTP, broker.ChannelSCP:
			case broker.ChannelPortForward:
				if len(r.ForwardTo) == 0 {
					return c.errf(r.line, "rule %s: channel port_forward needs forward_to: the destinations allowed (host:port)", r.Name)
				}
			default:
				return c.errf(r.line, "rule %s: channel %q: use shell, exec, sftp or scp", r.Name, ch)
			}
		}
		if r.Hours != "" {
			if _, err := broker.ParseHourRange(r.Hours); err != nil {
				return c.errf(r.line, "rule %s: %v", r.Name, err)
			}
		}
		for _, d := range r.Days {
			if _, ok := weekdays[strings.ToLower(d)]; !ok {
				return c.errf(r.line, "rule %s: day %q: use mon, tue, wed, thu, fri, sat or sun", r.Name, d)
			}
		}
		for _, d := range r.ForwardTo {
			h, p, err := net.SplitHostPort(d)
			if err != nil || h == "" {
				return c.errf(r.line, "rule %s: forward_to %q: write host:port, e.g. db.internal:5432, 10.0.0.0/24:443 or localhost:*", r.Name, d)
			}
			if n, err := strconv.Atoi(p); p != "*" && (err != nil || n < 1 || n > 65535) {
				return c.errf(r.line, "rule %s: forward_to %q: the port must be 1-65535 or *", r.Name, d)
			}
		}
		switch r.Files {
		case "", broker.FilesBoth:
		case broker.FilesUpload, broker.FilesDownload, broker.FilesNone:
			// A shell or a command can move files any way (cat, base64,
			// running sftp-server): the limit only holds without them.
			lim := broker.Limits{Channels: r.Channels}
			if lim.AllowsChannel(broker.ChannelShell) || lim.AllowsChannel(broker.ChannelExec) {
				return c.errf(r.line, "rule %s: files: %s only holds when the rule allows neither shell nor exec (set channels, e.g. [sftp, scp])", r.Name, r.Files)
			}
		default:
			return c.errf(r.line, "rule %s: files %q: use both, upload_only, download_only or none", r.Name, r.Files)
		}
		if err := c.validateTransfers(r); err != nil {
			return err
		}
		if r.MaxDuration < 0 {
			return c.errf(r.line, "rule %s: max_duration cannot be negative", r.Name)
		}
		if err := c.validateApproval(r, groups); err != nil {
			return err
		}
		if err := c.validateModeration(r, groups); err != nil {
			return err
		}
		if broker.Effect(r.Effect) == broker.Deny && (len(r.Channels) > 0 || r.Files != "" || r.MaxDuration != 0 || r.Login != "" ||
			len(r.ForwardTo) > 0 || len(r.UploadTo) > 0 || len(r.Legacy) > 0) {
			return c.errf(r.line, "rule %s: a deny rule cannot set login, channels, files, forward_to, upload_to, legacy_transfers or max_duration", r.Name)
		}
	}
	var compiled []broker.Rule
	for _, r := range c.Rules {
		hours, _ := broker.ParseHourRange(r.Hours)
		if r.Hours == "" {
			hours = nil
		}
		var days []time.Weekday
		for _, d := range r.Days {
			days = append(days, weekdays[strings.ToLower(d)])
		}
		br := broker.Rule{
			Name: r.Name, Effect: broker.Effect(r.Effect), When: r.When, Login: r.Login, Message: r.Message,
			Limits: broker.Limits{Channels: r.Channels, Files: r.Files, MaxDuration: time.Duration(r.MaxDuration),
				ForwardTo: r.ForwardTo, UploadTo: cleanDirs(r.UploadTo), Legacy: r.Legacy},
			RequireMFA: r.RequireMFA,
			Approval:   r.approvalSpec(),
			Moderation: r.moderationSpec(),
			Match: broker.Match{Technicians: r.Technicians, Affiliates: r.Affiliates, Targets: r.Targets,
				Residency: r.Residency, Data: r.Data, Labels: r.Labels, CrossBorder: r.CrossBorder, Hours: hours, Days: days},
		}
		if _, err := broker.NewPolicy([]broker.Rule{br}); err != nil {
			return c.errf(r.whenLine, "%v", err)
		}
		compiled = append(compiled, br)
	}
	p, err := broker.NewPolicy(compiled)
	if err != nil {
		return c.errf(0, "%v", err)
	}
	c.policy = p
	return c.validatePowers()
}

// validateApproval checks the approval block of rule r.
func (c *Config) validateApproval(r RuleEntry, groups map[string]bool) error {
	a := r.Approval
	if broker.Effect(r.Effect) != broker.Approval {
		if a != nil {
			return c.errf(r.line, "rule %s: only an approval rule has an approval block", r.Name)
		}
		return nil
	}
	if a == nil || len(a.From) == 0 {
		return c.errf(r.line, "rule %s: an approval rule needs approval.from: the groups whose members may approve (e.g. from: [approvers])", r.Name)
	}
	for _, g := range a.From {
		if !groups[g] {
			return c.errf(r.line, "rule %s: approval.from: no technician is in group %q; add it to an approver's groups", r.Name, g)
		}
	}
	if a.Approvals < 0 || a.Approvals > 10 {
		return c.errf(r.line, "rule %s: approval.approvals %d: use 1 to 10", r.Name, a.Approvals)
	}
	if a.PendingFor != 0 && (time.Duration(a.PendingFor) < time.Second || time.Duration(a.PendingFor) > 7*24*time.Hour) {
		return c.errf(r.line, "rule %s: approval.pending_for %s: use 1s to 168h", r.Name, time.Duration(a.PendingFor))
	}
	if a.MaxGrant != 0 && (time.Duration(a.MaxGrant) < time.Minute || time.Duration(a.MaxGrant) > 30*24*time.Hour) {
		return c.errf(r.line, "rule %s: approval.max_grant %s: use 1m to 720h", r.Name, time.Duration(a.MaxGrant))
	}
	return nil
}

// validateModeration checks a rule's moderation block against the
// groups and affiliates the config has.
func (c *Config) validateModeration(r RuleEntry, groups map[string]bool) error {
	m := r.Moderation
	if m == nil {
		return nil
	}
	if broker.Effect(r.Effect) == broker.Deny {
		return c.errf(r.line, "rule %s: a deny rule lets no session through, so it has no moderation block", r.Name)
	}
	if len(m.From) == 0 {
		return c.errf(r.line, "rule %s: moderation.from: name the groups whose members may moderate (e.g. from: [approvers])", r.Name)
	}
	for _, g := range m.From {
		if !groups[g] {
			return c.errf(r.line, "rule %s: moderation.from: no technician is in group %q; add it to a moderator's groups", r.Name, g)
		}
	}
	affiliates := map[string]bool{}
	for _, a := range c.Affiliates {
		affiliates[a.Name] = true
	}
	for _, a := range m.Affiliates {
		if !affiliates[a] {
			return c.errf(r.line, "rule %s: moderation.affiliates: %q is not an affiliate of this config", r.Name, a)
		}
	}
	if m.Moderators < 0 || m.Moderators > 5 {
		return c.errf(r.line, "rule %s: moderation.moderators %d: use 1 to 5", r.Name, m.Moderators)
	}
	if g := time.Duration(m.Grace); g != 0 && (g < time.Second || g > 10*time.Minute) {
		return c.errf(r.line, "rule %s: moderation.grace %s: use 1s to 10m", r.Name, g)
	}
	return nil
}

func (r RuleEntry) moderationSpec() broker.ModerationSpec {
	if r.Moderation == nil {
		return broker.ModerationSpec{}
	}
	m := r.Moderation
	return broker.ModerationSpec{From: m.From, Affiliates: m.Affiliates, DataCountry: m.DataCountry,
		Moderators: m.Moderators, Grace: time.Duration(m.Grace)}
}

func (r RuleEntry) approvalSpec() broker.ApprovalSpec {
	if r.Approval == nil {
		return broker.ApprovalSpec{}
	}
	a := r.Approval
	return broker.ApprovalSpec{Approvals: a.Approvals, From: a.From, OtherAffiliate: a.OtherAffiliate,
		PendingFor: time.Duration(a.PendingFor), MaxGrant: time.Duration(a.MaxGrant)}
}

// checkWebhookTransport refuses a webhook over plain HTTP to another
// host, unless the entry says the network between is trusted: reasons,
// names and request numbers would cross it readable, and an approve
// hint could be altered on the way. The URL is not quoted: it may hold
// a secret.
func (c *Config) checkWebhookTransport(w WebhookEntry) error {
	u, err := url.Parse(w.URL)
	if err != nil || u.Scheme != "http" || w.PlainHTTPOffLoopback {
		return nil
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback() {
		return nil
	}
	return c.errf(w.line, "webhook %s: url is plain http:// to %s, which is not this host: what webhooks carry (names, reasons, request numbers) would cross the network "+
		"unencrypted and could be altered on the way; use https://, or, where that network is trusted with it, set plain_http_off_loopback: true on the entry", w.Name, host)
}

// validateNotifications checks the webhooks and the metrics address.
func (c *Config) validateNotifications() error {
	names := map[string]bool{}
	for i, w := range c.Notifications.Webhooks {
		if w.Name == "" {
			return c.errf(w.line, "notifications.webhooks entry %d has no name", i+1)
		}
		if names[w.Name] {
			return c.errf(w.line, "webhook %q is declared twice", w.Name)
		}
		names[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c.errf(w.line, "webhook %s: url %q: write an absolute http:// or https:// URL", w.Name, w.URL)
		}
		if err := c.checkWebhookTransport(w); err != nil {
			return err
		}
		if w.Timeout < 0 || w.Backoff < 0 || w.Attempts < 0 {
			return c.errf(w.line, "webhook %s: timeout, attempts and backoff cannot be negative", w.Name)
		}
		c.Notifications.Webhooks[i].secret = nil
		if w.SecretFile != "" {
			b, err := os.ReadFile(c.Path(w.SecretFile))
			if err != nil {
				return c.errf(w.line, "webhook %s: secret_file: %v", w.Name, err)
			}
			key, err := notify.ParseSecret(string(b))
			if err != nil {
				return c.errf(w.line, "webhook %s: secret_file %s: %v", w.Name, w.SecretFile, err)
			}
			c.Notifications.Webhooks[i].secret = key
		}
	}
	n, err := notify.New(c.webhooks(), notify.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return c.errf(0, "notifications: %v", err)
	}
	n.Close(context.Background())
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return c.errf(0, "metrics.listen %q: write host:port, e.g. 127.0.0.1:9122", c.Metrics.Listen)
		}
	}
	return c.validateWeb()
}

// validateWeb checks the web console's section and fills its defaults.
func (c *Config) validateWeb() error {
	w := &c.Web
	if w.Listen == "" {
		if w.URL != "" || w.TLSCert != "" || w.TLSKey != "" || w.OIDC != nil {
			return c.errf(0, "web: listen is required to run the console (host:port, e.g. 127.0.0.1:8443)")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(w.Listen)
	if err != nil {
		return c.errf(0, "web.listen %q: write host:port, e.g. 127.0.0.1:8443", w.Listen)
	}
	if (w.TLSCert == "") != (w.TLSKey == "") {
		return c.errf(0, "web: give both tls_cert and tls_key, or neither")
	}
	if w.URL == "" {
		scheme := "http"
		if w.TLSCert != "" {
			scheme = "https"
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			return c.errf(0, "web.listen %q listens on every address: give web.url, the address browsers reach (it goes into sign-in links)", w.Listen)
		}
		w.URL = scheme + "://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" && u.Path != "/" {
		return c.errf(0, "web.url %q: write the console's address as browsers reach it, such as https://bastion.example.com:8443", w.URL)
	}
	w.URL = strings.TrimSuffix(w.URL, "/")
	// Sign-in links and session cookies cross the network in clear over
	// plain HTTP: only on loopback, or behind a proxy that browsers reach
	// over TLS (url https://).
	if ip := net.ParseIP(host); w.TLSCert == "" && u.Scheme != "https" && (ip == nil || !ip.IsLoopback()) && host != "localhost" {
		return c.errf(0, "web.listen %q without tls_cert speaks plain HTTP off loopback: sign-in links and cookies would cross the network in clear; "+
			"give tls_cert and tls_key, or put a TLS proxy in front and set web.url to its https:// address", w.Listen)
	}
	if w.IdleTimeout < 0 || w.SessionTTL < 0 {
		return c.errf(0, "web: idle_timeout and session_ttl cannot be negative")
	}
	if w.OIDC != nil {
		return c.validateOIDC(w.OIDC, u)
	}
	return nil
}

// validateStores checks the recording stores.
func (c *Config) validateStores() error {
	names, zones := map[string]bool{}, map[string]string{}
	for i, st := range c.RecordingStores {
		if st.Name == "" {
			return c.errf(st.line, "recording_stores entry %d has no name", i+1)
		}
		if names[st.Name] {
			return c.errf(st.line, "recording store %q is declared twice", st.Name)
		}
		names[st.Name] = true
		if len(st.Residency) == 0 {
			return c.errf(st.line, "recording store %s: residency is required: the zones stored here (e.g. [JP], or [\"*\"] for every other zone)", st.Name)
		}
		for _, z := range st.Residency {
			z = strings.ToUpper(z)
			if z != "*" && !countryRe.MatchString(z) {
				return c.errf(st.line, "recording store %s: residency %q is not a two-letter country code or *", st.Name, z)
			}
			if other, ok := zones[z]; ok {
				return c.errf(st.line, "recording store %s: zone %s is already stored in %s", st.Name, z, other)
			}
			zones[z] = st.Name
		}
		if st.Retention < 0 {
			return c.errf(st.line, "recording store %s: retention cannot be negative", st.Name)
		}
		if s3 := st.S3; s3 != nil {
			if s3.Endpoint == "" || s3.Bucket == "" || s3.AccessKeyFile == "" || s3.SecretKeyFile == "" {
				return c.errf(st.line, "recording store %s: s3 needs endpoint, bucket, access_key_file and secret_key_file", st.Name)
			}
			if strings.Contains(s3.Endpoint, "://") {
				return c.errf(st.line, "recording store %s: s3.endpoint %q: write host:port (set insecure: true for plain http)", st.Name, s3.Endpoint)
			}
		}
		if err := c.checkStoreTransport(st); err != nil {
			return err
		}
	}
	if c.RetentionInterval < 0 {
		return c.errf(0, "retention_interval cannot be negative")
	}
	return nil
}

// retentionFor returns the retention of recordings of residency zone,
// zero for none.
func (c *Config) retentionFor(zone string) time.Duration {
	var any time.Duration
	for _, st := range c.RecordingStores {
		for _, z := range st.Residency {
			switch {
			case strings.EqualFold(z, zone):
				return time.Duration(st.Retention)
			case z == "*":
				any = time.Duration(st.Retention)
			}
		}
	}
	return any
}

// webhooks returns the notifier's view of the webhooks.
func (c *Config) webhooks() []notify.Webhook {
	var out []notify.Webhook
	for _, w := range c.Notifications.Webhooks {
		out = append(out, notify.Webhook{Name: w.Name, URL: w.URL, Format: notify.Format(w.Format), Events: w.Events,
			Headers: w.Headers, Timeout: time.Duration(w.Timeout), MaxAttempts: w.Attempts, Backoff: time.Duration(w.Backoff), Secret: w.secret})
	}
	return out
}

// Domain builds the broker's technicians, targets and policy from the
// config.
func (c *Config) Domain() ([]*broker.Technician, []*broker.Target, *broker.Policy) {
	affs := map[string]broker.Affiliate{}
	for _, a := range c.Affiliates {
		affs[a.Name] = broker.Affiliate{Name: a.Name, Country: a.Country}
	}
	var techs []*broker.Technician
	for _, t := range c.Techs {
		bt := &broker.Technician{Name: t.Name, Affiliate: affs[t.Affiliate], Groups: t.Groups, RequireMFA: t.RequireMFA,
			ReviewResidency: t.ReviewResidency}
		for _, k := range t.Keys {
			key, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(k))
			bt.Keys = append(bt.Keys, key)
		}
		techs = append(techs, bt)
	}
	var targets []*broker.Target
	for _, t := range c.Targets {
		bt := &broker.Target{Name: t.Name, Hostnames: t.Hostnames, Address: t.Address, Login: t.Login, Residency: t.Residency, Zone: t.Zone,
			Data: t.Data, Labels: t.Labels}
		for _, k := range t.HostKeys {
			key, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(k))
			bt.HostKeys = append(bt.HostKeys, key)
		}
		for _, k := range t.HostCAs {
			key, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(k))
			bt.HostCAs = append(bt.HostCAs, key)
		}
		targets = append(targets, bt)
	}
	return techs, targets, c.policy
}

// JumpNames lists every name a target answers to through ProxyJump, in
// the order of the targets: each target's broker.Target.JumpNames.
func (c *Config) JumpNames() []string {
	var names []string
	for _, t := range c.Targets {
		for _, n := range (&broker.Target{Name: t.Name, Hostnames: t.Hostnames, Address: t.Address}).JumpNames() {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// VaultConfig returns the issuer's view of the vault section.
func (c *Config) VaultConfig() broker.VaultConfig {
	return broker.VaultConfig{
		Address: c.Vault.Address, RoleIDFile: c.Path(c.Vault.RoleIDFile), SecretIDFile: c.Path(c.Vault.SecretIDFile),
		AppRoleMount: c.Vault.AppRoleMount, Mount: c.Vault.Mount, Role: c.Vault.Role,
		TransitMount: c.Vault.TransitMount, TOTPKey: c.Vault.TOTPKey,
		TTL: time.Duration(c.Vault.CertTTL), Timeout: time.Duration(c.Vault.Timeout),
		HostMount: c.Vault.HostMount, HostRole: c.Vault.HostRole, HostTTL: time.Duration(c.Vault.HostCertTTL),
		SourceAddresses: c.Vault.sourcePrefixes,
	}
}

// validateTransfers checks a rule's upload directories and the transfers
// run as commands it opts in to, against its files limit.
func (c *Config) validateTransfers(r RuleEntry) error {
	lim := broker.Limits{Channels: r.Channels, Files: r.Files}
	switch {
	case r.Files == broker.FilesUpload && len(r.UploadTo) == 0:
		return c.errf(r.line, "rule %s: files: upload_only needs upload_to: the directories on the target that uploads may write into, e.g. [/srv/incoming]", r.Name)
	case r.Files != broker.FilesUpload && len(r.UploadTo) > 0:
		return c.errf(r.line, "rule %s: upload_to applies to files: upload_only only", r.Name)
	case !lim.Directional() && len(r.Legacy) > 0:
		return c.errf(r.line, "rule %s: legacy_transfers applies to files: upload_only or download_only only (other rules allow scp -O and rsync with channel scp)", r.Name)
	case len(r.Legacy) > 0 && !lim.AllowsChannel(broker.ChannelSCP):
		return c.errf(r.line, "rule %s: legacy_transfers needs channel scp in channels", r.Name)
	case lim.Directional() && lim.AllowsChannel(broker.ChannelPortForward):
		return c.errf(r.line, "rule %s: files: %s only holds without port_forward: a forward carries any data either way", r.Name, r.Files)
	}
	for _, d := range r.UploadTo {
		if !strings.HasPrefix(d, "/") || strings.ContainsRune(d, 0) {
			return c.errf(r.line, "rule %s: upload_to %q: write an absolute directory on the target, e.g. /srv/incoming", r.Name, d)
		}
		if path.Clean(d) == "/" {
			return c.errf(r.line, "rule %s: upload_to %q: the root is every directory; name the directories uploads go to", r.Name, d)
		}
	}
	for _, l := range r.Legacy {
		if l != broker.LegacySCP && l != broker.LegacyRsync {
			return c.errf(r.line, "rule %s: legacy_transfers %q: use scp (scp -O) or rsync", r.Name, l)
		}
	}
	return nil
}

// cleanDirs returns dirs as clean absolute paths.
func cleanDirs(dirs []string) []string {
	if len(dirs) == 0 {
		return nil
	}
	out := make([]string, len(dirs))
	for i, d := range dirs {
		out[i] = path.Clean(d)
	}
	return out
}

// parsePrefix reads an address or a CIDR prefix.
func parsePrefix(s string) (netip.Prefix, bool) {
	if prefix, err := netip.ParsePrefix(s); err == nil {
		return prefix, true
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, addr.BitLen()), true
}

// validateDatabase checks that the state is in one place, and that a
// PostgreSQL address holds no password.
func (c *Config) validateDatabase() error {
	d := &c.Database
	if d.URL == "" {
		if c.State == "" {
			return c.errf(0, "state is required (path of the SQLite state file), or database.url for PostgreSQL")
		}
		if d.PasswordFile != "" || d.Migrations != "" || d.MaxConnections != 0 {
			return c.errf(0, "database: url is required with password_file, migrations or max_connections")
		}
		return nil
	}
	if c.State != "" {
		return c.errf(0, "state and database.url are both set: the state is in one place; remove state (sekisho db copy --from %s moves what it holds to PostgreSQL)", c.State)
	}
	u, err := url.Parse(d.URL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return c.errf(0, "database.url: want postgres://user@host:port/database")
	}
	if _, has := u.User.Password(); has {
		return c.errf(0, "database.url holds a password: put it in database.password_file (mode 0600), PGPASSWORD or ~/.pgpass, never in the config")
	}
	switch d.Migrations {
	case "":
		d.Migrations = "auto"
	case "auto", "manual":
	default:
		return c.errf(0, "database.migrations %q: use auto or manual", d.Migrations)
	}
	if d.MaxConnections != 0 && d.MaxConnections < 4 {
		// A cluster job holds one connection while it works with
		// another, beside the heartbeat and the sessions.
		return c.errf(0, "database.max_connections %d: use at least 4", d.MaxConnections)
	}
	return nil
}
