package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
)

// cmdLock adds a lock. Running servers on the same state store pick it up
// within a second: new sessions are refused and live ones end.
func cmdLock(ctx context.Context, args []string) error {
	var (
		affiliate, technician, target, reason string
		duration                              time.Duration
	)
	cfg, _, err := parseWithConfig("lock", args, func(fs *flag.FlagSet) {
		fs.StringVar(&affiliate, "affiliate", "", "lock every technician of this affiliate")
		fs.StringVar(&technician, "technician", "", "lock this technician")
		fs.StringVar(&target, "target", "", "lock this target")
		fs.StringVar(&reason, "reason", "", "why (shown to the technicians whose sessions end; required)")
		fs.DurationVar(&duration, "for", 0, "lift the lock after this long (default: until `sekisho unlock`)")
	})
	if err != nil {
		return err
	}
	l := broker.Lock{Reason: strings.TrimSpace(reason), By: operator(), Created: time.Now()}
	set := 0
	for _, c := range []struct{ kind, name string }{{broker.LockAffiliate, affiliate}, {broker.LockTechnician, technician}, {broker.LockTarget, target}} {
		if c.name != "" {
			l.Kind, l.Name = c.kind, c.name
			set++
		}
	}
	if set != 1 {
		return usageError{msg: "lock: give exactly one of --affiliate, --technician, --target"}
	}
	if l.Reason == "" {
		return usageError{msg: "lock: --reason is required; it is shown to the technicians whose sessions end"}
	}
	if duration < 0 {
		return usageError{msg: "lock: --for must be positive"}
	}
	if duration > 0 {
		l.Expires = l.Created.Add(duration)
	}
	if !configured(cfg, l.Kind, l.Name) {
		return fmt.Errorf("no %s %q in %s", l.Kind, l.Name, cfg.File())
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	l, err = store.AddLock(ctx, l)
	if err != nil {
		return err
	}
	detail, _ := json.Marshal(l)
	if err := store.Audit(ctx, broker.AuditEvent{At: time.Now().UTC(), Kind: broker.EventLockAdded, Detail: string(detail)}); err != nil {
		return err
	}
	until := "until unlocked"
	if !l.Expires.IsZero() {
		until = "until " + l.Expires.Local().Format(time.RFC3339)
	}
	fmt.Printf("lock %d: %s %s locked %s: %s\n", l.ID, l.Kind, l.Name, until, l.Reason)
	return nil
}

func configured(cfg *node.Config, kind, name string) bool {
	switch kind {
	case broker.LockAffiliate:
		for _, a := range cfg.Affiliates {
			if a.Name == name {
				return true
			}
		}
	case broker.LockTechnician:
		for _, t := range cfg.Techs {
			if t.Name == name {
				return true
			}
		}
	case broker.LockTarget:
		for _, t := range cfg.Targets {
			if t.Name == name {
				return true
			}
		}
	}
	return false
}

func cmdUnlock(ctx context.Context, args []string) error {
	cfg, fs, err := parseWithConfig("unlock", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "unlock: give the lock ID (see `sekisho locks`)"}
	}
	id, err := strconv.ParseInt(fs.Arg(0), 10, 64)
	if err != nil {
		return usageError{msg: fmt.Sprintf("unlock: %q is not a lock ID (see `sekisho locks`)", fs.Arg(0))}
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.RemoveLock(ctx, id); err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			return fmt.Errorf("no lock %d in force (see `sekisho locks`)", id)
		}
		return err
	}
	if err := store.Audit(ctx, broker.AuditEvent{At: time.Now().UTC(), Kind: broker.EventLockRemoved,
		Detail: broker.JSONDetail(struct {
			ID int64  `json:"id"`
			By string `json:"by"`
		}{id, operator()})}); err != nil {
		return err
	}
	fmt.Printf("lock %d removed\n", id)
	return nil
}

func cmdLocks(ctx context.Context, args []string) error {
	var asJSON bool
	cfg, _, err := parseWithConfig("locks", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	locks, err := store.Locks(ctx, time.Now())
	if err != nil {
		return err
	}
	if asJSON {
		if locks == nil {
			locks = []broker.Lock{}
		}
		return json.NewEncoder(os.Stdout).Encode(locks)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLOCKED\tSINCE\tUNTIL\tBY\tREASON")
	for _, l := range locks {
		until := "unlocked"
		if !l.Expires.IsZero() {
			until = l.Expires.Local().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%d\t%s %s\t%s\t%s\t%s\t%s\n", l.ID, l.Kind, l.Name, l.Created.Local().Format("2006-01-02 15:04"), until, l.By, l.Reason)
	}
	return tw.Flush()
}

// cmdReload asks the running server of this config to reload it.
func cmdReload(args []string) error {
	cfg, _, err := parseWithConfig("reload", args, nil)
	if err != nil {
		return err
	}
	pidFile := cfg.PidFile()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("no running server found for %s (%v)", cfg.File(), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s does not hold a process ID", pidFile)
	}
	// The pid file may be stale and the number reused: signal only a
	// sekisho serving (sekisho serve, or the demo, which serves too).
	cmdline, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	argv := strings.Split(string(cmdline), "\x00")
	if rerr != nil || len(argv) < 2 || !strings.Contains(filepath.Base(argv[0]), "sekisho") || (!slices.Contains(argv, "serve") && !slices.Contains(argv, "demo")) {
		return fmt.Errorf("process %d from %s is not a running sekisho server (stale pid file?)", pid, pidFile)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("signal server %d: %w", pid, err)
	}
	fmt.Printf("asked sekisho (pid %d) to reload %s; its log says whether the new config is in force\n", pid, cfg.File())
	return nil
}

// operator names who runs a CLI command, for the audit log.
func operator() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "unknown"
}
