package session

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sekisho/sekisho/broker"
)

// channelKind tells what a shell, exec or subsystem request is for the
// rules: a shell, a command, sftp, or a file transfer run as a command
// (scp -O, rsync), with its direction as seen from the technician.
//
// The target's shell interprets the command, so only commands that cannot
// mean anything else count as file transfers: literal words (see
// shellWords), the real scp or rsync, and only the flags they send for
// one transfer, written without quotes. Anything else is a command.
func channelKind(reqType, command string) (kind string, upload, download bool) {
	switch reqType {
	case "shell":
		return broker.ChannelShell, false, false
	case "subsystem":
		return broker.ChannelSFTP, true, true
	}
	words, ok := shellWords(command)
	if !ok || len(words) == 0 || !words[0].plain {
		return broker.ChannelExec, false, false
	}
	for _, w := range words {
		if !w.plain && strings.HasPrefix(w.text, "-") {
			return broker.ChannelExec, false, false // a flag in quotes: not what scp or rsync send
		}
	}
	args := texts(words[1:])
	switch words[0].text {
	case "scp", "/usr/bin/scp":
		return scpKind(args)
	case "rsync", "/usr/bin/rsync":
		return rsyncKind(args)
	}
	return broker.ChannelExec, false, false
}

// shellWord is one word of a command as the target's shell reads it.
type shellWord struct {
	text  string
	plain bool // written without quotes or backslashes
}

// shellWords splits command into words as a POSIX shell (and bash, zsh,
// csh and fish) would, if it holds only forms that are literal text in
// all of them: words of letters, digits and ._/=,:@+- (and printable
// non-ASCII), = and % after a word's first character (zsh expands a
// leading =; rsync -i sends --log-format=%i), a backslash before
// printable ASCII punctuation or a space (rsync writes a space or a quote
// in a path so; fish reads \x2e, \n and the like as escapes), and single
// quotes around printable text without ! or a backslash (scp users quote
// so; fish reads \' inside single quotes as a quote). Words are separated
// by single or repeated spaces. Anything else (variables, substitutions,
// globs, ~, separators, redirections, double quotes, tabs or control
// characters) reports false.
func shellWords(command string) ([]shellWord, bool) {
	var words []shellWord
	var cur strings.Builder
	inWord, plain := false, true
	end := func() {
		if inWord {
			words = append(words, shellWord{text: cur.String(), plain: plain})
		}
		cur.Reset()
		inWord, plain = false, true
	}
	for i := 0; i < len(command); {
		r, size := utf8.DecodeRuneInString(command[i:])
		switch {
		case r == ' ':
			end()
		case r == '\\':
			if i+1 >= len(command) || command[i+1] < 0x20 || command[i+1] > 0x7e || isAlnum(command[i+1]) {
				return nil, false
			}
			cur.WriteByte(command[i+1])
			inWord, plain = true, false
			i += 2
			continue
		case r == '\'':
			j := strings.IndexByte(command[i+1:], '\'')
			if j < 0 {
				return nil, false
			}
			quoted := command[i+1 : i+1+j]
			for _, q := range quoted {
				if q == '!' || q == '\\' || q == utf8.RuneError || !unicode.IsPrint(q) {
					return nil, false
				}
			}
			cur.WriteString(quoted)
			inWord, plain = true, false
			i += j + 2
			continue
		case r < utf8.RuneSelf && (isAlnum(byte(r)) || strings.ContainsRune("._/,:@+-", r)),
			(r == '%' || r == '=') && inWord: // a job, a process or a command's path at a word's start only
			cur.WriteRune(r)
			inWord = true
		case r >= utf8.RuneSelf && r != utf8.RuneError && unicode.IsPrint(r) && !unicode.IsSpace(r):
			cur.WriteRune(r)
			inWord = true
		default:
			return nil, false
		}
		i += size
	}
	end()
	return words, len(words) > 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// texts returns the text of each word.
func texts(words []shellWord) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = w.text
	}
	return out
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
// source files are commands. So is an upload (the target receiving) with
// an option that has the target read and send back something else than
// what it receives: a list of files or rules from a file of its own
// (--files-from, --include-from, --exclude-from, --filter), other
// directories to compare with or copy from (--compare-dest, --copy-dest,
// --link-dest, --fuzzy), or batch files.
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
	for _, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if slices.Contains(rsyncReadingOptions, name) || rsyncShortFlags(a, 'y') {
			return broker.ChannelExec, false, false
		}
	}
	return broker.ChannelSCP, true, false
}

// rsyncReadingOptions have a receiving rsync read, on the target, other
// files than those it writes, and tell the technician of them.
var rsyncReadingOptions = []string{"--files-from", "--include-from", "--exclude-from", "--filter",
	"--compare-dest", "--copy-dest", "--link-dest", "--fuzzy", "--read-batch", "--write-batch", "--only-write-batch"}

// rsyncShortFlags reports whether arg is rsync's cluster of short flags
// (as -vlogDtpre.iLsfxCIvu; what follows the dot are capabilities) and
// holds flag.
func rsyncShortFlags(arg string, flag byte) bool {
	if !strings.HasPrefix(arg, "-") || strings.HasPrefix(arg, "--") {
		return false
	}
	flags, _, _ := strings.Cut(arg[1:], ".")
	return strings.IndexByte(flags, flag) >= 0
}

// isRsync reports whether command runs rsync.
func isRsync(command string) bool {
	words, ok := shellWords(command)
	return ok && len(words) > 0 && (words[0].text == "rsync" || words[0].text == "/usr/bin/rsync")
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
// channel, or "" when it allows it. Under a direction-limited rule, scp
// -O and rsync pass only the positive lists of checkLegacyTransfer;
// elsewhere they count as the scp channel when channelKind finds them
// literal.
func checkLimits(d broker.Decision, target, reqType, command string) string {
	l := d.Limits
	if program := legacyProgram(command); reqType == "exec" && program != "" && l.Directional() {
		return checkLegacyTransfer(d, target, program, command)
	}
	kind, upload, download := channelKind(reqType, command)
	if !l.AllowsChannel(kind) {
		if kind == broker.ChannelExec && isRsync(command) {
			return fmt.Sprintf("this rsync counts as a command (an option such as --files-from, --compare-dest or --fuzzy has the target read other files, or its words are not literal), and commands are not allowed on %s under rule %q", target, d.Rule)
		}
		return fmt.Sprintf("%s is not allowed on %s under rule %q", kind, target, d.Rule)
	}
	switch l.Files {
	case broker.FilesNone:
		if kind == broker.ChannelSCP || kind == broker.ChannelSFTP {
			return fmt.Sprintf("file transfers are not allowed on %s under rule %q", target, d.Rule)
		}
	case broker.FilesUpload:
		if download && kind != broker.ChannelSFTP { // sftp requests are checked one by one
			return fmt.Sprintf("only uploads to %s are allowed under rule %q; this %s downloads", target, d.Rule, kind)
		}
	case broker.FilesDownload:
		if upload && kind != broker.ChannelSFTP {
			return fmt.Sprintf("only downloads from %s are allowed under rule %q; this %s uploads", target, d.Rule, kind)
		}
	}
	return ""
}
