package session

import (
	"fmt"
	"path"
	"strings"

	"github.com/sekisho/sekisho/broker"
)

// channelKind tells what a shell, exec or subsystem request is for the
// rules: a shell, a command, sftp, or a file transfer run as a command
// (scp -O, rsync), with its direction as seen from the technician.
func channelKind(reqType, command string) (kind string, upload, download bool) {
	switch reqType {
	case "shell":
		return broker.ChannelShell, false, false
	case "subsystem":
		return broker.ChannelSFTP, true, true
	}
	// The target's shell runs the command: one that chains or substitutes
	// commands is a command, whatever program it starts with.
	fields := strings.Fields(command)
	if len(fields) == 0 || strings.ContainsAny(command, ";&|`$()<>\n\r") {
		return broker.ChannelExec, false, false
	}
	switch path.Base(fields[0]) {
	case "scp":
		// scp -t receives files on the target (an upload), scp -f sends
		// them (a download). Anything else is refused as both.
		to, from := hasFlag(fields[1:], 't'), hasFlag(fields[1:], 'f')
		if to == from {
			return broker.ChannelSCP, true, true
		}
		return broker.ChannelSCP, to, from
	case "rsync":
		if !contains(fields, "--server") {
			return broker.ChannelExec, false, false
		}
		if contains(fields, "--sender") {
			return broker.ChannelSCP, false, true
		}
		return broker.ChannelSCP, true, false
	}
	return broker.ChannelExec, false, false
}

// hasFlag reports whether a single-letter flag is set, alone or in a
// group ("-t", "-pt"), before the first operand.
func hasFlag(args []string, f byte) bool {
	for _, a := range args {
		if a == "--" || !strings.HasPrefix(a, "-") {
			return false
		}
		if !strings.HasPrefix(a, "--") && strings.IndexByte(a[1:], f) >= 0 {
			return true
		}
	}
	return false
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
