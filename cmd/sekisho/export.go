package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sekisho/sekisho/recording"
)

// cmdExport writes a recording in a form other tools read: an asciicast
// v2 file of one channel for players, or one JSON document of the whole
// session for analysis.
func cmdExport(ctx context.Context, args []string) error {
	var (
		format, out string
		opt         recording.CastOptions
	)
	cfg, fs, err := parseWithConfig("export", args, func(fs *flag.FlagSet) {
		fs.StringVar(&format, "format", "cast", "cast (asciicast v2, one channel, for asciinema play) or json (the whole session, every event)")
		fs.IntVar(&opt.Channel, "channel", 0, "export only this channel (1-based); cast: default the first terminal channel")
		fs.StringVar(&out, "out", "", "write to this file (default: standard output)")
		fs.BoolVar(&opt.Raw, "raw", false, "cast: keep terminal output as recorded, control sequences that act on the player's terminal included")
	})
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "export: give exactly one session ID (see `sekisho sessions`)"}
	}
	if format != "cast" && format != "json" {
		return usageError{msg: fmt.Sprintf("export: --format is cast or json, not %q", format)}
	}
	if opt.Channel < 0 {
		return usageError{msg: "export: --channel must be 1 or more"}
	}
	id := fs.Arg(0)
	// In the spool, or fetched from the zone's object store.
	root, cleanup, err := recordingRoot(ctx, cfg, id)
	if err != nil {
		return err
	}
	defer cleanup()

	var w io.Writer = os.Stdout
	var f *os.File
	if out != "" {
		// An export holds what the recording holds: private like it.
		f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		w = f
	}
	var n int
	if format == "cast" {
		n, err = recording.ExportCast(w, root, id, opt)
	} else {
		err = recording.ExportJSON(w, root, id, opt.Channel)
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(out) // no half export left behind
		}
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", id, err)
	}
	if format == "cast" && opt.Channel == 0 {
		if chans, cerr := recording.Channels(root, id); cerr == nil && len(chans) > 1 {
			fmt.Fprintf(os.Stderr, "sekisho: exported channel %d of %d; --channel N exports another\n", n, len(chans))
		}
	}
	return nil
}
