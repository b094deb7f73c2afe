package session

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/sekisho/sekisho/broker"
)

// Under a direction-limited rule (files: upload_only or download_only),
// a transfer run as a command (scp -O, rsync) is let through only in the
// forms below, which sekisho follows completely: the remote side of one
// OpenSSH scp transfer, and rsync's server side with the options a stock
// rsync client sends for a plain transfer in that direction (see
// server_options() in rsync's options.c). The target's program is what
// decides, and it reads more than the command line: rsync -s reads its
// options and paths again from the connection. So these are positive
// lists; whatever they do not name is a command, and the refusal names
// what it was.

// legacyTransfer is a transfer run as a command, as parseLegacyTransfer
// read it.
type legacyTransfer struct {
	program string // broker.LegacySCP or broker.LegacyRsync
	known   bool   // the direction is known: the words are one transfer's
	upload  bool   // to the target; else from it
	// what and why tell, when non-empty, what the positive list refused
	// (an option, a destination) and why, for the technician.
	what, why string
}

func (t legacyTransfer) refused() bool { return t.what != "" }

// legacyProgram returns broker.LegacySCP or broker.LegacyRsync when the
// first word of command, as separated by any white space, is scp or rsync
// by a name channelKind accepts, else "". It finds every command that
// channelKind counts as the scp channel, and more.
func legacyProgram(command string) string {
	fields := strings.Fields(command)
	if len(fields) == 0 {
		return ""
	}
	switch fields[0] {
	case "scp", "/usr/bin/scp":
		return broker.LegacySCP
	case "rsync", "/usr/bin/rsync":
		return broker.LegacyRsync
	}
	return ""
}

// parseLegacyTransfer reads command, which legacyProgram names program,
// against the positive lists; uploadTo are the directories an upload may
// write into. The direction is known even when the form is refused, once
// the words are literal; a refusal of -s comes before it, since with -s
// the direction is on stdin.
func parseLegacyTransfer(program, command string, uploadTo []string) legacyTransfer {
	t := legacyTransfer{program: program}
	words, ok := shellWords(command)
	if ok {
		for _, w := range words {
			ok = ok && (w.plain || !strings.HasPrefix(w.text, "-"))
		}
	}
	if !ok {
		t.what, t.why = "this "+legacyName(program)+" command",
			"the target's shell would read more into it than a plain transfer (quotes around a flag, $, ~, globs, or separators such as ;)"
		return t
	}
	args := texts(words[1:])
	if program == broker.LegacySCP {
		return parseSCP(t, args, uploadTo)
	}
	return parseRsync(t, args, uploadTo)
}

// legacyName is how messages name program.
func legacyName(program string) string {
	if program == broker.LegacySCP {
		return "scp -O"
	}
	return "rsync"
}

// parseSCP reads the remote side of one transfer as OpenSSH's scp starts
// it (scp.c: "scp%s%s%s%s -t %s%s"): -v, -r, -p and -d, each a word of its
// own and at most once, then -t (to the target) or -f (from it), then "--"
// when the path starts with a dash, then one path. scp's getopt (OpenBSD's,
// also in portable OpenSSH) stops at the first word that is no option, so
// a dash after the path is a path, and makes two. -v only makes the
// target's scp tell more of what it does, -r lets it take or send a
// directory, -p carries modes and times, -d asks that the destination be
// a directory; none has it read or write anything but the path given.
// The sink (-t) refuses names holding a slash or "..", so files land at
// the destination or below it.
func parseSCP(t legacyTransfer, args []string, uploadTo []string) legacyTransfer {
	seen := map[string]bool{}
	i := 0
	for ; i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--"; i++ {
		a := args[i]
		switch a {
		case "-v", "-r", "-p", "-d", "-t", "-f":
			if seen[a] {
				return t.refuse("scp option "+a+" twice", "OpenSSH's scp sends each option once")
			}
			seen[a] = true
		default:
			return t.refuse("scp option "+a, "sekisho lets scp -O through only with the options OpenSSH's scp sends (-v, -r, -p, -d, and -t or -f)")
		}
	}
	if seen["-t"] == seen["-f"] {
		return t.refuse("this scp -O command", "it is not one transfer: it needs exactly one of -t and -f")
	}
	t.known, t.upload = true, seen["-t"]
	if i < len(args) && args[i] == "--" {
		i++
	}
	if len(args)-i != 1 {
		return t.refuse("this scp -O command", "one transfer names one path")
	}
	if t.upload {
		return t.destination(args[i], uploadTo)
	}
	return t
}

func (t legacyTransfer) refuse(what, why string) legacyTransfer {
	t.what, t.why = what, why
	return t
}

// destination checks an upload's destination against uploadTo, as the
// target will resolve it: absolute (a relative path is resolved against
// the login's home, which sekisho does not know for a command), without
// ".." (which the target resolves after symbolic links, not as text), and
// after dropping "." and repeated slashes, one of uploadTo or inside one:
// files land inside it.
func (t legacyTransfer) destination(dest string, uploadTo []string) legacyTransfer {
	where := strings.Join(uploadTo, " or ")
	what := fmt.Sprintf("%s destination %q", legacyName(t.program), dest)
	switch {
	case len(uploadTo) == 0:
		return t.refuse(what, "the rule names no directory that uploads may write into")
	case !strings.HasPrefix(dest, "/"):
		return t.refuse(what, "a relative path depends on the login's home; give an absolute path inside "+where)
	case slices.Contains(strings.Split(dest, "/"), ".."):
		return t.refuse(what, "give a path inside "+where+" without ..")
	case !slices.ContainsFunc(uploadTo, func(d string) bool { return within(path.Clean(dest), d, false) }):
		return t.refuse(what, "uploads land inside "+where+" only")
	}
	return t
}

// rsyncSecluded returns how args (after "rsync") spell --secluded-args
// (-s, --protect-args), or turn it off, or "". With it the target's rsync
// reads its options and paths again from the connection, where sekisho
// does not look; so every spelling is refused, in a cluster of short
// flags too. The letters after -e's dot are capabilities, not flags ('s'
// there is symlink iconv support).
func rsyncSecluded(args []string) string {
	for _, a := range args {
		switch {
		case a == "--secluded-args" || a == "--protect-args":
			return a + " (-s)"
		case a == "--no-secluded-args" || a == "--no-protect-args" || a == "--no-s":
			return a
		case strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--"):
			flags, _, _ := strings.Cut(a[1:], "e")
			if strings.Contains(flags, "s") {
				return "-s (--secluded-args)"
			}
		}
	}
	return ""
}

// rsyncCapabilities is the argument of -e in rsync's cluster of short
// flags: "." or a pre-release protocol "31.2", then the letters of
// maybe_add_e_option() in options.c, which tell protocol features (file
// list I/O error safety, checksum seed order, varints and the like).
var rsyncCapabilities = regexp.MustCompile(`^(\.|[0-9]{1,3}\.[0-9]{1,3})[iLsfxCIvu]*$`)

// Short flags an rsync server may get in its cluster, by direction (the
// letters server_options() sends).
//
// Upload (the target receives): -v and -q say more or less, -r and -d
// take directories, -t and -p set times and modes of what is written, -E
// the executable bit, -O leaves directories' times alone, -I transfers
// every file even when size and time match, -z compresses, and -W (which
// an upload under upload_only needs) has the target send no checksums of
// the files it holds. Left out, among others: -n (a dry run lists what the
// target holds), -c (checksums of the target's files), -l and -D
// (symbolic links, devices and specials made on the target), -K (follows
// the target's symbolic links to directories), -H, -R (lets names from
// the sender be absolute), -y (reads other files as a basis), -b and -u
// (what the target holds decides), -o and -g (owners and groups), -A and
// -X (ACLs and extended attributes), -C (reads .cvsignore files on the
// target).
//
// Download (the target sends): everything a stock client sends for a
// download only shapes what the target reads and sends; none of these
// has the sending side write.
const (
	rsyncUploadFlags   = "vqrdtpEIOWz"
	rsyncDownloadFlags = "vqnldLkWHogDtUNpEAXrcCIRxSz"
)

// rsyncFlagNames name rsync's short flags in messages.
var rsyncFlagNames = map[rune]string{
	'n': "--dry-run", 'c': "--checksum", 'l': "--links", 'D': "--devices --specials", 'K': "--keep-dirlinks",
	'H': "--hard-links", 'R': "--relative", 'y': "--fuzzy", 'b': "--backup", 'u': "--update", 'o': "--owner",
	'g': "--group", 'A': "--acls", 'X': "--xattrs", 'C': "--cvs-exclude", 'x': "--one-file-system",
	'S': "--sparse", 'm': "--prune-empty-dirs", 'J': "--omit-link-times", 'L': "--copy-links",
	'k': "--copy-dirlinks", 'U': "--atimes", 'N': "--crtimes", 'B': "--block-size", 'T': "--temp-dir",
	'f': "--filter", 'M': "--remote-option",
}

// rsyncRefusalReasons say why an option is left out, where one reason
// fits better than "not a plain transfer".
var rsyncRefusalReasons = map[string]string{
	"-n": "a dry run lists what the target holds", "--dry-run": "a dry run lists what the target holds",
	"--list-only": "it lists what the target holds",
	"-c":          "the target would send checksums of the files it holds",
	"-l":          "it makes symbolic links on the target; use rsync -rtW (-a includes -l)",
	"-D":          "it makes devices and special files on the target; use rsync -rtW (-a includes -D)",
	"-o":          "it sets owners on the target; use rsync -rtW (-a includes -o)",
	"-g":          "it sets groups on the target; use rsync -rtW (-a includes -g)",
	"--specials":  "it makes special files on the target",
	"-K":          "it follows symbolic links on the target",
	"-R":          "it lets the sender name absolute paths on the target",
	"-y":          "it has the target read other files", "--fuzzy": "it has the target read other files",
	"--files-from":          "it has the target read a file of its own",
	"--include-from":        "it has the target read a file of its own",
	"--exclude-from":        "it has the target read a file of its own",
	"--filter":              "it has the target read rules, and files they name",
	"--compare-dest":        "it has the target read other directories",
	"--copy-dest":           "it has the target read other directories",
	"--link-dest":           "it has the target read and link other directories",
	"--read-batch":          "it has the target read a batch file",
	"--write-batch":         "it has the target write a batch file",
	"--backup-dir":          "it has the target write outside the destination",
	"--temp-dir":            "it has the target write outside the destination",
	"--partial-dir":         "it has the target write outside the destination",
	"--log-file":            "it has the target write a log file",
	"--inplace":             "it writes through what the destination holds, links included",
	"--append":              "the target would tell the length of the files it holds",
	"--size-only":           "what the target holds decides",
	"--remove-source-files": "it deletes files on the target",
	"--remove-sent-files":   "it deletes files on the target",
}

// rsyncOptionValue checks the value of a long option; nil means the
// option takes none.
type rsyncOptionValue func(string) bool

var (
	rsyncNumber      = regexp.MustCompile(`^[0-9]{1,9}$`).MatchString
	rsyncCompression = oneOf("zstd", "lz4", "zlibx", "zlib", "none")
	rsyncChecksums   = regexp.MustCompile(`^[a-z0-9]{1,16}(,[a-z0-9]{1,16})?$`).MatchString
	rsyncSuffixes    = regexp.MustCompile(`^[a-zA-Z0-9/]{1,512}$`).MatchString
	// rsyncInfo are --info words that say more of what the server does
	// with the files of the transfer itself (make_output_option()).
	rsyncInfo = regexp.MustCompile(`^(NAME|MISC|MOUNT|NONREG|SKIP|STATS|SYMSAFE)[0-9]?(,(NAME|MISC|MOUNT|NONREG|SKIP|STATS|SYMSAFE)[0-9]?)*$`).MatchString
)

func oneOf(values ...string) rsyncOptionValue {
	return func(v string) bool { return slices.Contains(values, v) }
}

// Long options an rsync server may get, by direction, with their values.
// For an upload: --partial keeps a cut file at its destination (-P sends
// it), --log-format with the values server_options() sends for -i, -P
// and --out-format, --mkpath makes the destination's missing directories
// (inside the upload directory, which was checked), --stats, --info words
// about the transfer, message routing, timeouts, bandwidth, compression,
// --numeric-ids, and --safe-links, which only leaves links out. For a
// download, --sender and what a stock client adds for a download: reading
// a list of files (on the target or from the client), listing, the
// receiver's in-place and append modes (which the client carries out),
// compression and checksum choices.
var (
	rsyncUploadOptions = map[string]rsyncOptionValue{
		"--partial": nil, "--stats": nil, "--mkpath": nil, "--msgs2stderr": nil, "--no-msgs2stderr": nil,
		"--numeric-ids": nil, "--safe-links": nil, "--new-compress": nil, "--old-compress": nil,
		"--log-format":      oneOf("X", "%i", "%i%I", "%o"),
		"--compress-level":  rsyncNumber,
		"--compress-choice": rsyncCompression,
		"--timeout":         rsyncNumber,
		"--bwlimit":         rsyncNumber,
		"--info":            rsyncInfo,
	}
	rsyncDownloadOptions = map[string]rsyncOptionValue{
		"--sender": nil, "--list-only": nil, "--inplace": nil, "--append": nil, "--specials": nil,
		"--no-specials": nil, "--msgs2stderr": nil, "--no-msgs2stderr": nil, "--new-compress": nil,
		"--old-compress": nil, "--ignore-missing-args": nil, "--copy-unsafe-links": nil, "--safe-links": nil,
		"--numeric-ids": nil, "--open-noatime": nil, "--from0": nil, "--no-relative": nil, "--no-implied-dirs": nil,
		"--files-from":      oneOf("-"), // the list comes from the client; --files-from FILE reads FILE on the target
		"--compress-level":  rsyncNumber,
		"--compress-choice": rsyncCompression,
		"--timeout":         rsyncNumber,
		"--bwlimit":         rsyncNumber,
		"--checksum-choice": rsyncChecksums,
		"--checksum-seed":   rsyncNumber,
		"--skip-compress":   rsyncSuffixes,
		"--info":            rsyncInfo,
	}
)

// parseRsync reads the server side of one rsync transfer, as do_cmd() in
// rsync's main.c starts it: "--server", "--sender" for a download, the
// options, ".", then the destination of an upload or the sources of a
// download. rsync's option parser (popt) takes options anywhere, so a word
// after "." that starts with a dash is refused as an option.
func parseRsync(t legacyTransfer, args []string, uploadTo []string) legacyTransfer {
	if s := rsyncSecluded(args); s != "" {
		return t.refuse("rsync option "+s,
			"with it the target's rsync reads its options and paths from the connection, where sekisho cannot check them; run rsync without -s")
	}
	if len(args) == 0 || args[0] != "--server" || slices.Contains(args, "--daemon") {
		return t.refuse("this rsync command", "sekisho lets rsync through only as the server side of one transfer (rsync --server), as an rsync client starts it")
	}
	t.known, t.upload = true, !slices.Contains(args, "--sender")
	flags, options, example := rsyncUploadFlags, rsyncUploadOptions, "rsync -rtW, with -v, -p, -z, -i or -P"
	if !t.upload {
		flags, options, example = rsyncDownloadFlags, rsyncDownloadOptions, "rsync -a, with -v, -z or -P"
	}
	// A long option, more telling, is named before a short flag: -R
	// comes with --files-from.
	var short *legacyTransfer
	whole, perms := false, false
	i := 1
	for ; i < len(args) && args[i] != "."; i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return t.refuse(fmt.Sprintf("rsync argument %q", a), "an rsync client sends options, then \".\", then paths")
		}
		if !strings.HasPrefix(a, "--") {
			if r := t.shortFlags(a, flags, example); r.refused() && short == nil {
				short = &r
			}
			letters := strings.SplitN(a, "e", 2)[0]
			whole = whole || strings.Contains(letters, "W")
			perms = perms || strings.Contains(letters, "p")
			continue
		}
		name, value, hasValue := strings.Cut(a, "=")
		check, known := options[name]
		switch {
		case !t.upload && name == "--files-from" && !hasValue:
			// --files-from FILE: the target reads FILE, which a
			// download may.
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "-") || args[i+1] == "." {
				return t.refuse("rsync option --files-from", "it needs a file")
			}
			i++
		case !known:
			return t.refuseOption(name, "", example)
		case (check == nil) == hasValue || (check != nil && !check(value)):
			return t.refuse(fmt.Sprintf("rsync option %q", a), "not a value sekisho lets through")
		}
	}
	if short != nil {
		return *short
	}
	if i >= len(args) {
		return t.refuse("this rsync command", "it names no path")
	}
	paths := args[i+1:]
	for _, p := range paths {
		if strings.HasPrefix(p, "-") {
			return t.refuseOption(p, "", example)
		}
	}
	if !t.upload {
		if len(paths) == 0 {
			return t.refuse("this rsync command", "it names no path")
		}
		return t
	}
	if !whole {
		return t.refuse("rsync without --whole-file (-W)", "the target would send checksums of the files it holds; run rsync with -W")
	}
	if len(paths) != 1 {
		return t.refuse("this rsync command", "an upload names one destination")
	}
	if t = t.destination(paths[0], uploadTo); t.refused() {
		return t
	}
	// Into an upload directory itself, from a source ending in "/", rsync
	// gives the directory the source's attributes: its mode with -p. The
	// directory itself may not be changed (as over sftp); its times may,
	// as any upload into it changes them.
	if dest := path.Clean(paths[0]); perms && slices.Contains(uploadTo, dest) {
		return t.refuse("rsync option -p (--perms) into "+dest+" itself",
			"it would give "+dest+" the mode of the source directory; upload into a directory inside it, or without -p")
	}
	return t
}

// shortFlags checks a cluster of rsync's short flags against flags: the
// letters up to an "e", whose argument (the rest) is rsync's capability
// list.
func (t legacyTransfer) shortFlags(cluster, flags, example string) legacyTransfer {
	letters, caps, hasCaps := strings.Cut(cluster[1:], "e")
	for _, f := range letters {
		if !strings.ContainsRune(flags, f) {
			return t.refuseOption("-"+string(f), rsyncFlagNames[f], example)
		}
	}
	if hasCaps && !rsyncCapabilities.MatchString(caps) {
		return t.refuse("rsync option -e"+caps, "it is not the capability list an rsync client sends")
	}
	return t
}

// refuseOption refuses the rsync option opt (long, a name for a short
// one), saying why when rsyncRefusalReasons knows, else what plain
// transfer to run instead.
func (t legacyTransfer) refuseOption(opt, long, example string) legacyTransfer {
	what := "rsync option " + opt
	if long != "" {
		what += " (" + long + ")"
	}
	why, ok := rsyncRefusalReasons[opt]
	switch {
	case ok:
	case strings.HasPrefix(opt, "--delete") || opt == "--force" || opt == "--max-delete":
		why = "it deletes files on the target, and lists them"
	default:
		why = "sekisho lets through only the options of a plain transfer, such as " + example
	}
	return t.refuse(what, why)
}

// checkLegacyTransfer returns why a direction-limited rule refuses command,
// run by program (scp or rsync), or "" when it allows it. A transfer the
// rule does not opt in to, or that does not pass the positive lists, is a
// command, which the rule may allow as such; one known to go the other
// way is refused all the same.
func checkLegacyTransfer(d broker.Decision, target, program, command string) string {
	l := d.Limits
	refused := func(why string) string {
		if l.AllowsChannel(broker.ChannelExec) {
			return ""
		}
		return why
	}
	way := "uploads there go"
	if l.Files == broker.FilesDownload {
		way = "downloads from there go"
	}
	t := parseLegacyTransfer(program, command, l.UploadTo)
	switch {
	case t.known && t.upload && l.Files == broker.FilesDownload:
		return fmt.Sprintf("only downloads from %s are allowed under rule %q; this %s uploads", target, d.Rule, legacyName(program))
	case t.known && !t.upload && l.Files == broker.FilesUpload:
		return fmt.Sprintf("only uploads to %s are allowed under rule %q; this %s downloads", target, d.Rule, legacyName(program))
	case !l.AllowsChannel(broker.ChannelSCP) || !l.AllowsLegacy(program):
		return refused(fmt.Sprintf("%s is not allowed on %s under rule %q: %s over SFTP only (sftp, or scp without -O)",
			legacyName(program), target, d.Rule, way))
	case t.refused():
		return refused(fmt.Sprintf("%s is refused under rule %q: %s", t.what, d.Rule, t.why))
	}
	return ""
}
