package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// cmdHold puts a recording under a legal hold: retention keeps it until
// the hold is released.
func cmdHold(ctx context.Context, args []string) error {
	var reason string
	cfg, fs, err := parseWithConfig("hold", args, func(fs *flag.FlagSet) {
		fs.StringVar(&reason, "reason", "", "why the recording must be kept (a case or order reference; required)")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "hold: give one session ID"}
	}
	id := fs.Arg(0)
	if _, err := recording.SessionDir("/", id); err != nil {
		return fmt.Errorf("%w; session IDs are listed by `sekisho sessions`", err)
	}
	if reason = strings.TrimSpace(reason); reason == "" {
		return usageError{msg: "hold: --reason is required"}
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Session(ctx, id); err != nil {
		return fmt.Errorf("session %s: %w", id, err)
	}
	h := broker.LegalHold{Session: id, Reason: reason, By: operator(), At: time.Now()}
	if err := store.SetHold(ctx, h); err != nil {
		return err
	}
	detail, _ := json.Marshal(h)
	if err := store.Audit(ctx, broker.AuditEvent{At: time.Now().UTC(), Kind: broker.EventRecordingHold, Session: id, Detail: string(detail)}); err != nil {
		return err
	}
	fmt.Printf("recording %s held: %s\n", id, reason)
	return nil
}

// cmdRelease lifts a legal hold.
func cmdRelease(ctx context.Context, args []string) error {
	cfg, fs, err := parseWithConfig("release", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "release: give one session ID"}
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	id := fs.Arg(0)
	if err := store.RemoveHold(ctx, id); errors.Is(err, broker.ErrNotFound) {
		return fmt.Errorf("recording %s is not held (see `sekisho holds`)", id)
	} else if err != nil {
		return err
	}
	if err := store.Audit(ctx, broker.AuditEvent{At: time.Now().UTC(), Kind: broker.EventRecordingRelease, Session: id,
		Detail: broker.JSONDetail(struct {
			By string `json:"by"`
		}{operator()})}); err != nil {
		return err
	}
	fmt.Printf("recording %s released: retention applies again\n", id)
	return nil
}

// cmdHolds lists the legal holds.
func cmdHolds(ctx context.Context, args []string) error {
	cfg, _, err := parseWithConfig("holds", args, nil)
	if err != nil {
		return err
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	holds, err := store.Holds(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSINCE\tBY\tREASON")
	for _, h := range holds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Session, h.At.Local().Format(time.RFC3339), h.By, h.Reason)
	}
	return tw.Flush()
}
