package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
)

// cmdKnownHosts prints the known_hosts line that makes technicians'
// clients trust the host certificates sekisho presents as a target
// through ProxyJump: the host CA, for the targets' names.
func cmdKnownHosts(ctx context.Context, args []string) error {
	var patterns stringList
	cfg, _, err := parseWithConfig("known-hosts", args, func(fs *flag.FlagSet) {
		fs.Var(&patterns, "pattern", "host pattern the line covers, such as '*.db.example' (repeatable; default: every target's names)")
	})
	if err != nil {
		return err
	}
	line, err := knownHostsLine(ctx, cfg, patterns)
	if err != nil {
		return err
	}
	fmt.Println(line)
	fmt.Fprintln(os.Stderr, "technicians add this line to ~/.ssh/known_hosts; then ssh -J TECHNICIAN@BASTION TECHNICIAN@TARGET checks the targets' host certificates")
	return nil
}

// knownHostsLine is the @cert-authority line for patterns, or for every
// target's names when there are none.
func knownHostsLine(ctx context.Context, cfg *node.Config, patterns []string) (string, error) {
	vc := cfg.VaultConfig().WithDefaults()
	ca, err := broker.FetchHostCA(ctx, vc.Address, vc.HostMount, vc.Timeout)
	if err != nil {
		return "", err
	}
	if len(patterns) == 0 {
		patterns = cfg.JumpNames()
	}
	for _, p := range patterns {
		if p == "" || strings.ContainsAny(p, " \t,#") {
			return "", fmt.Errorf("--pattern %q: a known_hosts host pattern has no spaces, commas or '#'; give one pattern per --pattern", p)
		}
	}
	return broker.KnownHostsLine(ca, patterns), nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
