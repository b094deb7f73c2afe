package main

import (
	"fmt"
	"io"
	"strings"
)

// Help before anything else: `sekisho GROUP --help` (a command whose
// subcommand is missing) and a remote command's --help answer with their
// lines of the usage and exit 0, without reading a config or logging in.
// Commands with flags of their own answer --help through their flag set.

// groupCommands take a subcommand.
var groupCommands = map[string]bool{"vault": true, "report": true, "policy": true, "technician": true, "config": true, "db": true}

// remoteCommands run on the running server over SSH.
var remoteCommands = map[string]bool{"request": true, "requests": true, "cancel": true, "approve": true, "deny": true,
	"revoke": true, "grants": true, "kill": true}

// wantsHelp reports whether args ask for help.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

// usageOf is the lines of the usage that describe cmd: those naming it,
// with the indented lines that continue them.
func usageOf(cmd string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(usage, "\n") {
		t := strings.TrimLeft(line, " ")
		switch {
		case t == "sekisho "+cmd || strings.HasPrefix(t, "sekisho "+cmd+" "):
			in = true
		case in && strings.HasPrefix(line, "    ") && !strings.HasPrefix(t, "sekisho "):
		default:
			in = false
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// printHelp writes cmd's usage, and for a remote command the connection
// flags, to w.
func printHelp(w io.Writer, cmd string, remote bool) {
	fmt.Fprintf(w, "usage:\n%s", usageOf(cmd))
	if remote {
		fmt.Fprint(w, "\nRuns on the running server, over SSH as technician NAME with your SSH key (and TOTP code if required).\n"+
			"Connection flags go anywhere: [--config FILE] [--server HOST:PORT] [--as NAME] [-i KEY] [--known-hosts FILE]\n")
	}
	fmt.Fprint(w, "\n`sekisho help` lists every command.\n")
}
