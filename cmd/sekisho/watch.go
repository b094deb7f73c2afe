package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/sekisho/sekisho/recording"
)

// cmdWatch follows a live session from its recording on this machine,
// read-only: it reads files and never reads the terminal, so nothing
// typed here can reach the session. Ctrl-C (ctx) stops it.
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
	err = recording.Watch(ctx, os.Stdout, root, id, opt)
	if errors.Is(err, context.Canceled) {
		fmt.Fprint(os.Stdout, "\r\n[sekisho: stopped watching]\r\n")
		return nil
	}
	return err
}
