package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sekisho/sekisho/internal/node"
)

// cmdServe runs a node from the config until SIGINT or SIGTERM, and
// reloads its config on SIGHUP; under systemd (Type=notify), it says
// when it is ready, reloading and stopping.
func cmdServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	path, err := findConfig(*configPath)
	if err != nil {
		return err
	}
	cfg, err := node.LoadConfig(path)
	if err != nil {
		return err
	}
	logger := newLogger(cfg, os.Stderr)
	// SIGHUP reloads: ask for it before anyone can find this server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	n, err := node.Start(ctx, cfg, logger, nil)
	if err != nil {
		return err
	}
	notify := func(state string) {
		if err := sdNotify(state); err != nil {
			logger.Warn("service manager not told", "state", state, "err", err)
		}
	}
	notify("READY=1\nSTATUS=serving SSH on " + n.Addr().String())
	for {
		select {
		case <-ctx.Done():
			notify("STOPPING=1")
			return n.Stop()
		case <-hup:
			notify("RELOADING=1")
			n.Reload(path)
			notify("READY=1\nSTATUS=serving SSH on " + n.Addr().String())
		case <-n.Done():
			// The listener failed: stop rather than run without serving.
			if serr := n.Stop(); serr != nil {
				return serr
			}
			return fmt.Errorf("ssh listener: %w", n.Err())
		}
	}
}

func newLogger(cfg *node.Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch cfg.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	w = inertWriter{w} // technicians and targets choose some of what is logged
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
