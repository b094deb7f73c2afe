package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
	"github.com/sekisho/sekisho/recording"
)

// cmdWatch follows a live session, read-only: from its recording on this
// machine, or, when another node of the cluster serves it, relayed from
// that node over the node-to-node link. It never reads the terminal, so
// nothing typed here can reach the session. Ctrl-C (ctx) stops it.
func cmdWatch(ctx context.Context, args []string) error {
	var opt recording.WatchOptions
	cfg, fs, err := parseWithConfig("watch", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&opt.FromStart, "from-start", false, "show the session from its beginning, then follow it")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "watch: give exactly one session ID (live sessions: `sekisho sessions`, those without an end)"}
	}
	id := fs.Arg(0)
	root := cfg.Path(cfg.Recordings)
	if _, err := recording.SessionDir(root, id); err != nil {
		return fmt.Errorf("%w; session IDs are listed by `sekisho sessions`", err)
	}
	if cfg.Postgres() {
		err = watchElsewhere(ctx, cfg, id, opt)
	} else {
		err = errNotElsewhere
	}
	if errors.Is(err, errNotElsewhere) {
		err = recording.Watch(ctx, os.Stdout, root, id, opt)
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprint(os.Stdout, "\r\n[sekisho: stopped watching]\r\n")
		return nil
	}
	return err
}

// errNotElsewhere is watchElsewhere's answer for a session no other node
// serves now: it is watched here.
var errNotElsewhere = errors.New("not live on another node")

// watchElsewhere follows session id from the node that serves it, when
// that is another node, and audits who watched it through which node.
func watchElsewhere(ctx context.Context, cfg *node.Config, id string, opt recording.WatchOptions) error {
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	rec, err := store.Session(ctx, id)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		return fmt.Errorf("no session %s in the register; session IDs are listed by `sekisho sessions`", id)
	case err != nil:
		return err
	case rec.Ended() || rec.Node == "" || rec.Node == cfg.NodeName:
		return errNotElsewhere
	}
	peers, err := node.NewPeers(cfg, store)
	if err != nil {
		return err
	}
	detail := broker.JSONDetail(struct {
		By       string `json:"by"`
		Through  string `json:"through"`
		ServedBy string `json:"served_by"`
	}{operator(), cfg.NodeName, rec.Node})
	if err := store.Audit(ctx, broker.AuditEvent{At: time.Now().UTC(), Kind: broker.EventSessionWatched, Target: rec.Target, Source: "cli",
		Session: id, Detail: detail}); err != nil {
		return fmt.Errorf("audit: %w (nothing is watched unaudited)", err)
	}
	err = peers.Watch(ctx, rec.Node, id, operator(), os.Stdout, opt)
	if errors.Is(err, recording.ErrNoRecording) {
		return fmt.Errorf("session %s is not live on node %s any more; see `sekisho sessions`", id, rec.Node)
	}
	return err
}
