package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Every command and subcommand the usage names answers --help, and
// -h, with exit status 0 (main exits 0 on nil and on flag.ErrHelp),
// before it reads a config, a database or logs in anywhere: run from an
// empty directory, with no SEKISHO_CONFIG and no user.
func TestEveryCommandAnswersHelp(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("SEKISHO_CONFIG", "")
	t.Setenv("SEKISHO_USER", "")
	t.Setenv("USER", "")
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = devnull, devnull
	defer func() { os.Stdout, os.Stderr = stdout, stderr }()

	line := regexp.MustCompile(`^\s+sekisho ([a-z-]+)(?: ([a-z][a-z-]+))?`)
	seen := map[string]bool{}
	var commands [][]string
	for _, l := range strings.Split(usage, "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		words := []string{m[1]}
		if groupCommands[m[1]] && m[2] != "" {
			words = append(words, m[2])
		}
		for _, w := range [][]string{words[:1], words} {
			if k := strings.Join(w, " "); !seen[k] {
				seen[k] = true
				commands = append(commands, w)
			}
		}
	}
	commands = append(commands, []string{"sessions", "--live"})
	if len(commands) < 40 {
		t.Fatalf("only %d commands found in the usage: %q", len(commands), commands)
	}
	for _, c := range commands {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string{}, c...), h)
			if err := run(context.Background(), args); err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Errorf("sekisho %s: %v; want help and exit status 0", strings.Join(args, " "), err)
			}
		}
	}
}
