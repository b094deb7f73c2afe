package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
	"github.com/sekisho/sekisho/internal/syslog"
	"github.com/sekisho/sekisho/recording"
)

// commonFlags parses --config plus the command's own flags.
func parseWithConfig(name string, args []string, define func(fs *flag.FlagSet)) (*node.Config, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	configPath := fs.String("config", "", "config file")
	if define != nil {
		define(fs)
	}
	if err := fs.Parse(reorder(args)); err != nil {
		return nil, nil, flagError(err)
	}
	path, err := findConfig(*configPath)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := node.LoadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	return cfg, fs, nil
}

// defaultConfigPaths are tried in order when --config is not given.
var defaultConfigPaths = []string{"sekisho.yaml", "/etc/sekisho/sekisho.yaml"}

// findConfig returns the config file to use: flag, then $SEKISHO_CONFIG,
// then the default paths.
func findConfig(flagPath string) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	if p := os.Getenv("SEKISHO_CONFIG"); p != "" {
		return p, nil
	}
	for _, p := range defaultConfigPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no config file: pass --config FILE, set SEKISHO_CONFIG, or create %s", strings.Join(defaultConfigPaths, " or "))
}

// reorder moves positional arguments after the flags, so that
// `sekisho replay ID --speed 4` works as well as `--speed 4 ID`.
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && !isBoolFlag(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

func isBoolFlag(a string) bool {
	switch strings.TrimLeft(a, "-") {
	case "json", "instant", "events", "cross-border", "from-start", "live", "all", "events-inline", "raw":
		return true
	}
	return false
}

// openStore opens the state store of a server that has run: a command
// never makes an empty one.
func openStore(ctx context.Context, cfg *node.Config) (node.Store, error) {
	if !cfg.Postgres() {
		path := cfg.Path(cfg.State)
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("state store %s: %w (has `sekisho serve` run with this config?)", path, err)
		}
	}
	store, err := node.OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if sc := cfg.SyslogConfig(); sc != nil {
		sender, err := syslog.New(*sc, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			store.Close()
			return nil, err
		}
		return auditCopied{Store: store, copy: sender}, nil
	}
	return store, nil
}

// auditCopied is a store whose audit events, those a command writes
// (locks, holds, watching), go to audit.syslog too, as the server's do.
type auditCopied struct {
	node.Store
	copy *syslog.Sender
}

func (s auditCopied) Audit(ctx context.Context, e broker.AuditEvent) error {
	if err := s.Store.Audit(ctx, e); err != nil {
		return err
	}
	s.copy.Send(e)
	return nil
}

// Close sends what is queued to syslog, for 10 s at most, and closes the
// store.
func (s auditCopied) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.copy.Close(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sekisho: the audit event is stored, but not sent to syslog:", err)
	}
	return s.Store.Close()
}

func cmdSessions(ctx context.Context, args []string) error {
	var (
		f            broker.SessionFilter
		asJSON       bool
		crossBorder  bool
		since, until string
	)
	cfg, fs, err := parseWithConfig("sessions", args, func(fs *flag.FlagSet) {
		fs.StringVar(&f.Technician, "technician", "", "only this technician")
		fs.StringVar(&f.Target, "target", "", "only this target")
		fs.StringVar(&f.Affiliate, "affiliate", "", "only technicians of this affiliate")
		fs.StringVar(&f.Residency, "residency", "", "only targets resident in this country (JP)")
		fs.BoolVar(&f.Live, "live", false, "only sessions not ended (by the register)")
		fs.StringVar(&since, "since", "", "started from: a UTC date (2026-11-01), an RFC 3339 time, or an age (30d, 12h)")
		fs.StringVar(&until, "until", "", "started before, as --since; a date is included whole")
		fs.IntVar(&f.Limit, "limit", 50, "at most this many sessions, newest first")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.BoolVar(&crossBorder, "cross-border", false, "only cross-border sessions")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("sessions: unexpected argument %q; filter with --technician, --target, --affiliate, --residency, --cross-border, --live, --since or --until", fs.Arg(0))}
	}
	f.Residency = strings.ToUpper(f.Residency)
	if f.Since, f.Until, err = optionalPeriod("sessions", since, until, time.Now()); err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	if crossBorder {
		f.CrossBorder = &crossBorder
	}
	list, err := store.Sessions(ctx, f)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(inertWriter{os.Stdout})
		enc.SetIndent("", "  ")
		if list == nil {
			list = []broker.SessionRecord{}
		}
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	// Several nodes share a PostgreSQL store: say which served each.
	nodes := cfg.Postgres()
	node := func(name string) string {
		if !nodes {
			return ""
		}
		if name == "" {
			name = "-"
		}
		return name + "\t"
	}
	fmt.Fprintln(tw, "SESSION\tTECHNICIAN\tAFFILIATE\tSOURCE\tFROM\tTARGET\tRESIDENCY\t"+node("NODE")+"START\tEND\tIN\tOUT\tEND REASON")
	for _, s := range list {
		end := "live"
		if s.Ended() {
			end = s.EndedAt.Local().Format("15:04:05")
		}
		aff := s.Affiliate + " (" + s.AffiliateCountry + ")"
		if s.CrossBorder {
			aff += " cross-border"
		}
		from := s.SourceCountry
		if from == "" {
			from = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\t%s\t%s\t%s\t%s\n", s.ID, s.Technician, aff, s.Source, from, s.Target, s.Residency, node(s.Node),
			s.StartedAt.Local().Format("2006-01-02 15:04:05"), end, byteCount(s.BytesIn), byteCount(s.BytesOut), s.EndReason)
	}
	return tw.Flush()
}

func byteCount(n int64) string {
	switch {
	case n < 1<<10:
		return strconv.FormatInt(n, 10) + "B"
	case n < 1<<20:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
}

func cmdReplay(ctx context.Context, args []string) error {
	var (
		opt    recording.ReplayOptions
		events bool
	)
	cfg, fs, err := parseWithConfig("replay", args, func(fs *flag.FlagSet) {
		fs.Float64Var(&opt.Speed, "speed", 1, "playback speed factor")
		fs.DurationVar(&opt.MaxIdle, "max-idle", 2*time.Second, "cap on pauses")
		fs.BoolVar(&opt.Instant, "instant", false, "print without pauses")
		fs.IntVar(&opt.Channel, "channel", 0, "replay only this channel (1-based)")
		fs.BoolVar(&events, "events", false, "print every event (input, output, commands, exit status) one per line")
		fs.DurationVar(&opt.From, "from", 0, "start at this time of each channel (10m, 90s, 1h2m), as --events lists times")
		fs.BoolVar(&opt.EventsInline, "events-inline", false, "also show input, commands and every other event as marker lines")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "replay: give exactly one session ID (see `sekisho sessions`)"}
	}
	if opt.From < 0 {
		return usageError{msg: "replay: --from must not be negative"}
	}
	id := fs.Arg(0)
	// In the spool, or fetched from the zone's object store.
	root, cleanup, err := recordingRoot(ctx, cfg, id)
	if err != nil {
		return err
	}
	defer cleanup()
	if events {
		return recording.WriteEvents(os.Stdout, root, id)
	}
	err = recording.Replay(ctx, os.Stdout, root, id, opt)
	fmt.Fprint(os.Stdout, "\r\n")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func cmdAudit(ctx context.Context, args []string) error {
	var f broker.AuditFilter
	var kinds, since, until, format string
	cfg, fs, err := parseWithConfig("audit", args, func(fs *flag.FlagSet) {
		fs.IntVar(&f.Limit, "limit", 100, "the newest N matching events")
		fs.StringVar(&kinds, "kind", "", "event kinds, comma-separated; mfa.* (or mfa.) is every mfa event")
		fs.StringVar(&f.Technician, "technician", "", "events of this technician")
		fs.StringVar(&f.Target, "target", "", "events about this target")
		fs.StringVar(&f.Session, "session", "", "events of this session")
		fs.StringVar(&f.Source, "source", "", "events from this address (any port)")
		fs.StringVar(&since, "since", "", "from: a UTC date (2026-11-01), an RFC 3339 time, or an age (30d, 12h)")
		fs.StringVar(&until, "until", "", "until, as --since; a date is included whole")
		fs.StringVar(&f.Text, "grep", "", "events whose detail contains this text (any case)")
		fs.StringVar(&format, "format", "json", "json (one event per line) or text (aligned, for people)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("audit: unexpected argument %q; filter with --kind, --technician, --target, --session, --source, --since, --until or --grep", fs.Arg(0))}
	}
	if format != "json" && format != "text" {
		return usageError{msg: fmt.Sprintf("audit: --format %q: use json or text", format)}
	}
	if f.Limit < 0 {
		return usageError{msg: fmt.Sprintf("audit: --limit %d: give a positive number of events", f.Limit)}
	}
	for _, k := range strings.Split(kinds, ",") {
		if k = strings.TrimSpace(k); k != "" {
			f.Kinds = append(f.Kinds, k)
		}
	}
	if f.Since, f.Until, err = optionalPeriod("audit", since, until, time.Now()); err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	events, err := store.SearchAudit(ctx, f)
	if err != nil {
		return err
	}
	if format == "text" {
		return writeAuditText(inertWriter{os.Stdout}, events)
	}
	enc := json.NewEncoder(inertWriter{os.Stdout})
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

// optionalPeriod reads the --since and --until of command cmd, either of
// which may be empty (no bound): a UTC date, an RFC 3339 time or an age;
// a date given to --until is included whole.
func optionalPeriod(cmd, since, until string, now time.Time) (from, to time.Time, err error) {
	if since != "" {
		if from, _, err = reportTime(since, now); err != nil {
			return from, to, usageError{msg: fmt.Sprintf("%s: --since %q: %v", cmd, since, err)}
		}
	}
	if until != "" {
		var date bool
		if to, date, err = reportTime(until, now); err != nil {
			return from, to, usageError{msg: fmt.Sprintf("%s: --until %q: %v", cmd, until, err)}
		}
		if date {
			to = to.AddDate(0, 0, 1)
		}
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return from, to, usageError{msg: fmt.Sprintf("%s: the period from %s to %s is empty; --since must come before --until",
			cmd, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))}
	}
	return from, to, nil
}

// writeAuditText writes events for people: time, kind, who, what, from
// where, the session, then the detail, with a JSON detail unquoted.
func writeAuditText(w io.Writer, events []broker.AuditEvent) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tTECHNICIAN\tTARGET\tSOURCE\tSESSION\tDETAIL")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, e := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format("2006-01-02 15:04:05"), e.Kind,
			dash(e.Technician), dash(e.Target), dash(e.Source), dash(e.Session), dash(e.Detail))
	}
	return tw.Flush()
}

func cmdConfigCheck(args []string) error {
	cfg, _, err := parseWithConfig("config check", args, nil)
	if err != nil {
		return err
	}
	fmt.Printf("%s: ok (%d affiliates, %d technicians, %d targets, %d rules)\n",
		cfg.File(), len(cfg.Affiliates), len(cfg.Techs), len(cfg.Targets), len(cfg.Rules))
	return cfg.WriteStoreTable(os.Stdout)
}

func cmdVaultSetup(ctx context.Context, args []string) error {
	var caOut string
	cfg, _, err := parseWithConfig("vault setup", args, func(fs *flag.FlagSet) {
		fs.StringVar(&caOut, "ca-out", "", "write the user CA public key here (for sshd's TrustedUserCAKeys)")
	})
	if err != nil {
		return err
	}
	token := os.Getenv("VAULT_TOKEN")
	if token == "" {
		return errors.New("vault setup needs an admin token in VAULT_TOKEN (it is used once and not stored)")
	}
	rep, err := vaultSetup(ctx, cfg, token, caOut)
	if err != nil {
		return err
	}
	for _, c := range rep.Changes {
		fmt.Println("vault:", c)
	}
	fmt.Println("user CA public key (put it in sshd's TrustedUserCAKeys on each target):")
	fmt.Println(strings.TrimSpace(rep.CA))
	fmt.Println("host CA public key (technicians trust it for ProxyJump; `sekisho known-hosts` prints their known_hosts line):")
	fmt.Println(strings.TrimSpace(rep.HostCA))
	return nil
}

func vaultSetup(ctx context.Context, cfg *node.Config, token, caOut string) (*broker.SetupReport, error) {
	vc := vault.DefaultConfig()
	vc.Address = cfg.Vault.Address
	vc.Timeout = 30 * time.Second
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, err
	}
	client.SetToken(token)
	logins := map[string]bool{}
	var principals []string
	for _, t := range cfg.Targets {
		if !logins[t.Login] {
			logins[t.Login] = true
			principals = append(principals, t.Login)
		}
	}
	for _, r := range cfg.Rules {
		if r.Login != "" && !logins[r.Login] {
			logins[r.Login] = true
			principals = append(principals, r.Login)
		}
	}
	return broker.Setup(ctx, client, broker.VaultSetup{Vault: cfg.VaultConfig(), Principals: principals, HostNames: cfg.JumpNames(), CAPublicKeyFile: caOut})
}
