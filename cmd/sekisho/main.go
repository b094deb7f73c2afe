// Command sekisho is an SSH access broker for outsourced administrators:
// technicians reach targets through it with plain OpenSSH, data-residency
// rules decide who may reach what, Vault signs a certificate of minutes
// for each connection, and every session is recorded for replay.
//
// Usage:
//
//	sekisho serve        [--config FILE]       run the bastion
//	sekisho vault setup  [--config FILE]       configure Vault for sekisho (idempotent)
//	sekisho sessions     [--config FILE]       list sessions
//	sekisho replay       [--config FILE] ID    replay a session in the terminal
//	sekisho audit        [--config FILE]       show the audit log
//	sekisho report cross-border [--config FILE] who from foreign affiliates reached what, approved by whom
//	sekisho verify       [--config FILE] ID    check a recording's chunks, chain and signed seal
//	sekisho recording-key                      print the public key that signs recordings
//	sekisho known-hosts  [--config FILE]       the known_hosts line technicians need for ssh -J
//	sekisho policy test  [--config FILE]       explain the decision for a technician, target, source and time
//	sekisho policy check [--config FILE]       lint the rules
//	sekisho lock / unlock / locks              stop an affiliate, technician or target at once
//	sekisho reload       [--config FILE]       reload the running server's config
//	sekisho config check [--config FILE]       validate the config file
//	sekisho db migrate / copy                  PostgreSQL schema migrations; SQLite state into PostgreSQL
//	sekisho request / requests / cancel        access requests, on the running server over SSH
//	sekisho approve / deny / revoke            decide requests and end grants, likewise
//	sekisho grants / kill / sessions --live    grants in force, live sessions, likewise
//	sekisho demo [--ha]                        run the demo on loopback (--ha: three nodes behind HAProxy)
//
// Without --config, sekisho reads $SEKISHO_CONFIG, then ./sekisho.yaml,
// then /etc/sekisho/sekisho.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sekisho/sekisho/internal/buildinfo"
)

const usage = `sekisho: SSH access broker for outsourced administrators

usage:
  sekisho serve        [--config FILE]                 run the bastion
  sekisho vault setup  [--config FILE] [--ca-out FILE] configure Vault (needs VAULT_TOKEN; safe to run twice)
  sekisho sessions     [--config FILE] [--technician NAME] [--target NAME] [--affiliate NAME] [--residency JP]
                       [--cross-border] [--live] [--since 24h|DATE] [--until DATE] [--limit N] [--json]
  sekisho replay       [--config FILE] [--speed X] [--max-idle D] [--instant] [--from D] [--events-inline] [--events] SESSION-ID
  sekisho export       [--config FILE] [--format cast|json] [--channel N] [--out FILE] [--raw] SESSION-ID
  sekisho watch        [--config FILE] [--from-start] SESSION-ID   follow a live session read-only
  sekisho audit        [--config FILE] [--kind K,mfa.*] [--technician NAME] [--target NAME] [--session ID] [--source IP]
                       [--since 24h|DATE] [--until DATE] [--grep TEXT] [--limit N] [--format json|text]
  sekisho report cross-border [--config FILE] [--since 2026-11-01|30d] [--until DATE] [--residency JP,SG] [--format table|csv|json]
  sekisho verify       [--config FILE] [--key FILE] [--json] SESSION-ID|DIRECTORY   check a recording's integrity
  sekisho recording-key [--config FILE]                the public key that signs recordings (for offline verify)
  sekisho known-hosts  [--config FILE] [--pattern '*.db.example']   the known_hosts line for ssh -J through sekisho
  sekisho fetch        [--config FILE] [--out DIR] SESSION-ID   copy a recording out of its store
  sekisho hold         [--config FILE] --reason TEXT SESSION-ID   keep a recording past its retention (legal hold)
  sekisho release      [--config FILE] SESSION-ID       lift a legal hold
  sekisho holds        [--config FILE]                  list legal holds
  sekisho policy test  [--config FILE] --technician NAME --target NAME --from IP [--at RFC3339] [--json]
  sekisho policy check [--config FILE]                 warn about rules that never apply, unknown labels, pii across borders
  sekisho lock         [--config FILE] --affiliate|--technician|--target NAME --reason TEXT [--for 2h]
  sekisho unlock       [--config FILE] LOCK-ID
  sekisho locks        [--config FILE] [--json]
  sekisho reload       [--config FILE]                 reload the config of the running server (or send it SIGHUP)
  sekisho technician enroll-totp [--config FILE] NAME  make a second factor (TOTP) for a technician
  sekisho config check [--config FILE]
  sekisho db migrate   [--config FILE]                 apply the PostgreSQL schema migrations (database.migrations: manual)
  sekisho db copy      [--config FILE] --from FILE     move a node's SQLite state into the config's empty PostgreSQL database
  sekisho demo         [--dir .demo] [--listen 127.0.0.1:2222] [--web 127.0.0.1:8080]
  sekisho demo --ha    [--dir .demo-ha] [--nodes 3] [--listen 127.0.0.1:2222] [--web 127.0.0.1:8080]
                       three nodes on PostgreSQL and MinIO behind HAProxy
  sekisho version

On the running server, over SSH as technician NAME with your SSH key (and TOTP code if required);
connection flags go anywhere: [--config FILE] [--server HOST:PORT] [--as NAME] [-i KEY] [--known-hosts FILE]
  sekisho request      TARGET --reason TEXT [--duration 1h]
  sekisho requests     [--all] [--json]
  sekisho cancel       N
  sekisho approve      N [--comment TEXT]
  sekisho deny         N --reason TEXT
  sekisho revoke       N [--reason TEXT]
  sekisho grants       [--json]
  sekisho sessions     --live [--json]
  sekisho kill         SESSION [--reason TEXT]

Without --config, sekisho reads $SEKISHO_CONFIG, then ./sekisho.yaml, then /etc/sekisho/sekisho.yaml.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		var ue usageError
		switch {
		case errors.Is(err, flag.ErrHelp):
			os.Exit(0) // the command's flags are printed
		case errors.As(err, &ue) && ue.flags:
			// The flag package printed the command's flags.
			fmt.Fprintf(os.Stderr, "sekisho: %v (`sekisho help` lists every command)\n", err)
			os.Exit(2)
		case errors.As(err, &ue):
			fmt.Fprintf(os.Stderr, "sekisho: %v\n\n%s", err, usage)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "sekisho: %v\n", err)
		os.Exit(1)
	}
}

// usageError is a command line that cannot be run: the usage follows.
type usageError struct {
	msg   string
	flags bool // from a command's flags, which the flag package printed
}

// flagError is what a command returns when its flags do not parse.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{msg: err.Error(), flags: true}
}

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{msg: "no command given"}
	}
	cmd, rest := args[0], args[1:]
	if groupCommands[cmd] {
		if sub, subArgs := subcommand(rest); sub == "" && wantsHelp(subArgs) {
			printHelp(os.Stdout, cmd, false)
			return nil
		}
	}
	if (remoteCommands[cmd] || cmd == "sessions" && liveRequested(rest)) && wantsHelp(rest) {
		printHelp(os.Stdout, cmd, true)
		return nil
	}
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest)
	case "vault":
		sub, rest := subcommand(rest)
		if sub != "setup" {
			return usageError{msg: "vault: the only subcommand is setup"}
		}
		return cmdVaultSetup(ctx, rest)
	case "sessions":
		if liveRequested(rest) {
			return cmdRemote(ctx, args)
		}
		return cmdSessions(ctx, rest)
	case "request", "requests", "cancel", "approve", "deny", "revoke", "grants", "kill":
		return cmdRemote(ctx, args)
	case "replay":
		return cmdReplay(ctx, rest)
	case "export":
		return cmdExport(ctx, rest)
	case "watch":
		return cmdWatch(ctx, rest)
	case "audit":
		return cmdAudit(ctx, rest)
	case "report":
		return cmdReport(ctx, rest)
	case "verify":
		return cmdVerify(ctx, rest)
	case "fetch":
		return cmdFetch(ctx, rest)
	case "hold":
		return cmdHold(ctx, rest)
	case "release":
		return cmdRelease(ctx, rest)
	case "holds":
		return cmdHolds(ctx, rest)
	case "recording-key":
		return cmdRecordingKey(ctx, rest)
	case "known-hosts":
		return cmdKnownHosts(ctx, rest)
	case "policy":
		sub, rest := subcommand(rest)
		return cmdPolicy(append([]string{sub}, rest...))
	case "lock":
		return cmdLock(ctx, rest)
	case "unlock":
		return cmdUnlock(ctx, rest)
	case "locks":
		return cmdLocks(ctx, rest)
	case "reload":
		return cmdReload(rest)
	case "technician":
		return cmdTechnician(ctx, rest)
	case "db":
		return cmdDB(ctx, rest)
	case "config":
		sub, rest := subcommand(rest)
		if sub != "check" {
			return usageError{msg: "config: the only subcommand is check"}
		}
		return cmdConfigCheck(rest)
	case "demo":
		return cmdDemo(ctx, rest)
	case "version", "--version":
		fmt.Println(buildinfo.Get())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	default:
		return usageError{msg: fmt.Sprintf("unknown command %q", cmd)}
	}
}

// subcommand takes the first word of args that is neither a flag nor the
// value of --config, so that `sekisho policy --config F test` works as
// well as `sekisho policy test --config F`.
func subcommand(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--config" || a == "-config" {
			i++
			continue
		}
		if strings.HasPrefix(a, "-") {
			continue
		}
		return a, append(append([]string{}, args[:i]...), args[i+1:]...)
	}
	return "", args
}
