package session

import (
	"fmt"
	"strings"

	"github.com/sekisho/sekisho/broker"
)

// channelKind tells what a shell, exec or subsystem request is for the
// rules: a shell, a command, sftp, or a file transfer run as a command
// (scp -O, rsync), with its direction as seen from the technician.
//
// The target's shell interprets the command, so only commands that cannot
// mean anything else count as file transfers: plain words (no quotes,
// escapes, substitutions or separators), the real scp or rsync, and only
// the flags they send for one transfer. Anything else is a command.
func channelKind(reqType, command string) (kind string, upload, download bool) {
	switch reqType {
	case "shell":
		return broker.ChannelShell, false, false
	case "subsystem":
		return broker.ChannelSFTP, true, true
	}
	if !plainCommand(command) {
		return broker.ChannelExec, false, false
	}
	fields := strings.Fields(command)
	switch fields[0] {
	case "scp", "/usr/bin/scp":
		return scpKind(fields[1:])
	case "rsync", "/usr/bin/rsync":
		return rsyncKind(fields[1:])
	}
	return broker.ChannelExec, false, false
}

// plainCommand reports whether command is words of a safe alphabet.
func plainCommand(command string) bool {
	if strings.TrimSpace(command) == "" {
		return false
	}
	for i := 0; i < len(command); i++ {
		c := command[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(" ._/=,:@+-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// scpKind accepts the remote side of one scp transfer: exactly one of -t
// (to the target) and -f (from it), and only the flags scp sends.
func scpKind(args []string) (string, bool, bool) {
	var to, from bool
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-"); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		for _, f := range a[1:] {
			switch f {
			case 't':
				to = true
			case 'f':
				from = true
			case 'r', 'p', 'd', 'v', 'q', 'T':
			default:
				return broker.ChannelExec, false, false
			}
		}
	}
	if to == from || i >= len(args) {
		return broker.ChannelExec, false, false
	}
	return broker.ChannelSCP, to, from
}

// rsyncKind accepts rsync's server side for one transfer; --sender means
// files go to the technician. Daemon mode, a config file and removing
// source files are commands.
func rsyncKind(args []string) (string, bool, bool) {
	if !contains(args, "--server") {
		return broker.ChannelExec, false, false
	}
	for _, a := range args {
		if a == "--daemon" || strings.HasPrefix(a, "--config") || strings.HasPrefix(a, "--remove-source") ||
			strings.HasPrefix(a, "--rsh") || strings.HasPrefix(a, "--rsync-path") {
			return broker.ChannelExec, false, false
		}
	}
	if contains(args, "--sender") {
		return broker.ChannelSCP, false, true
	}
	return broker.ChannelSCP, true, false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkLimits returns why the rule that allowed the session refuses this
// channel, or "" when it allows it.
func checkLimits(d broker.Decision, target, reqType, command string) string {
	kind, upload, download := channelKind(reqType, command)
	l := d.Limits
	if !l.AllowsChannel(kind) {
		return fmt.Sprintf("%s is not allowed on %s under rule %q", kind, target, d.Rule)
	}
	switch l.Files {
	case broker.FilesNone:
		if kind == broker.ChannelSCP || kind == broker.ChannelSFTP {
			return fmt.Sprintf("file transfers are not allowed on %s under rule %q", target, d.Rule)
		}
	case broker.FilesUpload:
		if download && kind != broker.ChannelSFTP { // sftp requests are checked one by one
			return fmt.Sprintf("only uploads to %s are allowed under rule %q; %s can download", target, d.Rule, kind)
		}
	case broker.FilesDownload:
		if upload && kind != broker.ChannelSFTP {
			return fmt.Sprintf("only downloads from %s are allowed under rule %q; %s can upload", target, d.Rule, kind)
		}
	}
	return ""
}
