package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
)

func cmdPolicy(args []string) error {
	if len(args) == 0 || args[0] == "" {
		return usageError{msg: "policy: give test or check"}
	}
	switch args[0] {
	case "test":
		return cmdPolicyTest(os.Stdout, args[1:])
	case "check":
		return cmdPolicyCheck(os.Stdout, args[1:])
	}
	return usageError{msg: fmt.Sprintf("policy: unknown subcommand %q (use test or check)", args[0])}
}

// offlineBroker is a broker for answering policy questions: no Vault, no
// store, nothing connected.
func offlineBroker(cfg *node.Config) *broker.Broker {
	techs, targets, policy := cfg.Domain()
	return broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Geo: cfg.Geo(),
		Logger: discardLogger()})
}

func cmdPolicyTest(w io.Writer, args []string) error {
	var (
		tech, target, from, at string
		asJSON                 bool
	)
	cfg, _, err := parseWithConfig("policy test", args, func(fs *flag.FlagSet) {
		fs.StringVar(&tech, "technician", "", "technician name (required)")
		fs.StringVar(&target, "target", "", "target name (required)")
		fs.StringVar(&from, "from", "", "source IP address (required)")
		fs.StringVar(&at, "at", "", "time of the connection, RFC 3339 (default now)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	if tech == "" || target == "" || from == "" {
		return usageError{msg: "policy test: --technician, --target and --from are required"}
	}
	if _, err := netip.ParseAddr(from); err != nil {
		return usageError{msg: fmt.Sprintf("policy test: --from %q is not an IP address; give the address the technician connects from, such as 203.0.113.7", from)}
	}
	now := time.Now()
	if at != "" {
		if now, err = time.Parse(time.RFC3339, at); err != nil {
			return fmt.Errorf("--at %q: use RFC 3339, e.g. 2026-12-01T03:00:00+09:00", at)
		}
	}
	b := offlineBroker(cfg)
	t, ok := b.Technician(tech)
	if !ok {
		return fmt.Errorf("no technician %q in %s (technicians: %s)", tech, cfg.File(), names(cfg.Techs, func(t node.Technician) string { return t.Name }))
	}
	tg, ok := b.Target(target)
	if !ok {
		return fmt.Errorf("no target %q in %s (targets: %s)", target, cfg.File(), names(cfg.Targets, func(t node.TargetEntry) string { return t.Name }))
	}
	d := b.Decide(t, tg, from, now)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Effect broker.Effect      `json:"effect"`
			Rule   string             `json:"rule"`
			Login  string             `json:"login,omitempty"`
			Reason string             `json:"reason"`
			Inputs broker.Inputs      `json:"inputs"`
			Trace  []broker.TraceStep `json:"trace"`
		}{d.Effect, d.Rule, d.Login, d.Reason, d.Inputs, d.Trace})
	}
	printDecision(w, d)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printDecision(w io.Writer, d broker.Decision) {
	in := d.Inputs
	list := func(l []string) string { return dash(strings.Join(l, ", ")) }
	var labels []string
	for k, v := range in.Target.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	rule := d.Rule
	if rule == "" {
		rule = "(none matched: default deny)"
	}
	fmt.Fprintf(w, "decision  %s\nrule      %s\n", strings.ToUpper(string(d.Effect)), rule)
	if d.Allowed() {
		fmt.Fprintf(w, "login     %s\n", d.Login)
	} else {
		fmt.Fprintf(w, "reason    %s\n", d.Reason)
	}
	if d.Rule != "" && d.Effect != broker.Deny {
		l := d.Limits
		chans := l.Channels
		if len(chans) == 0 {
			chans = broker.DefaultChannels
		}
		files := l.Files
		switch {
		case files == "":
			files = broker.FilesBoth
		case files == broker.FilesUpload:
			files += " into " + strings.Join(l.UploadTo, ",")
		}
		if l.Directional() {
			if l.TargetSFTPOnly() {
				files += " (sftp only, forced by the certificate)"
			} else {
				files += " (sftp, and " + strings.Join(l.Legacy, ",") + " checked by sekisho alone)"
			}
		}
		max := "none"
		if l.MaxDuration > 0 {
			max = l.MaxDuration.String()
		}
		fmt.Fprintf(w, "limits    channels %s; files %s; forward_to %s; max_duration %s; mfa %v\n",
			strings.Join(chans, ","), files, dash(strings.Join(l.ForwardTo, ",")), max, d.RequireMFA)
	}
	if a := d.Approval; a != nil {
		other := ""
		if a.OtherAffiliate {
			other = " of another affiliate"
		}
		fmt.Fprintf(w, "approval  %d from %s%s; pending for %s; grant at most %s\n",
			a.Approvals, strings.Join(a.From, ","), other, a.PendingFor, a.MaxGrant)
	}
	if m := d.Moderation; m != nil {
		where := ""
		if len(m.Affiliates) > 0 {
			where += " of " + strings.Join(m.Affiliates, ",")
		}
		if m.DataCountry {
			where += " in " + in.Target.Residency
		}
		fmt.Fprintf(w, "moderation %d watching, from %s%s, never of %s; grace %s\n",
			m.Moderators, strings.Join(m.From, ","), where, in.Technician.Affiliate, m.Grace)
	}
	fmt.Fprintf(w, "\ninputs\n")
	fmt.Fprintf(w, "  technician    %s (affiliate %s, country %s, groups %s)\n", in.Technician.Name, in.Technician.Affiliate, in.Technician.Country, list(in.Technician.Groups))
	fmt.Fprintf(w, "  source        %s (country %s, network %s)\n", in.Source.Address, dash(in.Source.Country), dash(in.Source.Network))
	fmt.Fprintf(w, "  target        %s (residency %s, zone %s, data %s, labels %s)\n", in.Target.Name, in.Target.Residency, in.Target.Zone, list(in.Target.Data), list(labels))
	fmt.Fprintf(w, "  now           %s\n", in.Now.Format(time.RFC3339))
	fmt.Fprintf(w, "  cross_border  %v\n", in.CrossBorder)
	fmt.Fprintf(w, "\ntrace (a matching deny wins; else the first matching allow or approval)\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, s := range d.Trace {
		m := "no"
		if s.Matched {
			m = "MATCH"
		}
		fmt.Fprintf(tw, "  %d.\t%s\t%s\t%s\t%s\n", i+1, s.Rule, s.Effect, m, s.Why)
	}
	tw.Flush()
}

func cmdPolicyCheck(w io.Writer, args []string) error {
	cfg, _, err := parseWithConfig("policy check", args, nil)
	if err != nil {
		return err
	}
	techs, targets, policy := cfg.Domain()
	findings := policy.Lint(techs, targets, cfg.Geo().Networks())
	findings = append(findings, broker.LintPowers(techs, cfg.PowerGroups(), policy)...)
	if len(findings) == 0 {
		fmt.Fprintf(w, "%s: %d rules, no findings (tried every technician and target from the affiliate's country, the residency, each network and an unknown place, every day at several hours)\n",
			cfg.File(), len(policy.Rules))
		return nil
	}
	for _, f := range findings {
		fmt.Fprintf(w, "%s: warning: %s\n", cfg.File(), f)
	}
	return fmt.Errorf("%d finding(s) in %s", len(findings), cfg.File())
}

func names[T any](list []T, name func(T) string) string {
	var out []string
	for _, v := range list {
		out = append(out, name(v))
	}
	return strings.Join(out, ", ")
}
