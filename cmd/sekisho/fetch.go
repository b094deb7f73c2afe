package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/sekisho/sekisho/recording"

	"github.com/sekisho/sekisho/internal/node"
)

// recordingRoot returns a directory holding recording id: the spool
// when it is there, else a temporary copy fetched from the object store
// that has it. cleanup removes the copy.
func recordingRoot(ctx context.Context, cfg *node.Config, id string) (root string, cleanup func(), err error) {
	spool := cfg.Path(cfg.Recordings)
	dir, err := recording.SessionDir(spool, id)
	if err != nil {
		return "", nil, fmt.Errorf("%w; session IDs are listed by `sekisho sessions`", err)
	}
	if _, err := os.Stat(dir); err == nil {
		return spool, func() {}, nil
	}
	routes, err := cfg.RecordingRoutes()
	if err != nil {
		return "", nil, err
	}
	for _, st := range routes.ObjectStores() {
		if !st.Has(ctx, id) {
			continue
		}
		tmp, err := os.MkdirTemp("", "sekisho-fetch-")
		if err != nil {
			return "", nil, err
		}
		if _, err := st.Fetch(ctx, id, tmp); err != nil {
			os.RemoveAll(tmp)
			return "", nil, err
		}
		return tmp, func() { os.RemoveAll(tmp) }, nil
	}
	return "", nil, fmt.Errorf("recording %s is neither in %s nor in a recording store (deleted by retention?)", id, spool)
}

// cmdFetch copies a recording from its store into a directory, for
// offline review (sekisho verify --key, asciinema play).
func cmdFetch(ctx context.Context, args []string) error {
	var out string
	cfg, fs, err := parseWithConfig("fetch", args, func(fs *flag.FlagSet) {
		fs.StringVar(&out, "out", ".", "directory to put the recording's directory in")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "fetch: give one session ID"}
	}
	root, cleanup, err := recordingRoot(ctx, cfg, fs.Arg(0))
	if err != nil {
		return err
	}
	defer cleanup()
	src, _ := recording.SessionDir(root, fs.Arg(0))
	dst, err := recording.SessionDir(out, fs.Arg(0))
	if err != nil {
		return err
	}
	if _, err := os.Stat(dst); err == nil {
		return errors.New(dst + " exists; choose another --out")
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		return err
	}
	fmt.Println(dst)
	return nil
}
