// Package recording owns sekisho's session recordings: the on-disk format,
// the writer that the relay hands every byte to before it forwards it, the
// reader, and terminal replay.
//
// # Layout
//
// A session is a directory named by its UUID under the recording directory:
//
//	<dir>/<session-id>/session.json   metadata, rewritten when the session ends
//	<dir>/<session-id>/<n>.cast       one event stream per session channel, n = 1, 2, …
//	<dir>/<session-id>/<n>.raw        the exact bytes of channel n when it has no terminal (format 2)
//	<dir>/<session-id>/chain.jsonl    the integrity chain: one line per chunk of a .cast or .raw file
//	<dir>/<session-id>/seal.json      the signed seal, once the session ended (or was recovered)
//	<dir>/<session-id>/upload.json    upload progress, when the zone has an object store
//	<dir>/<session-id>/<n>.cast.idx   seek index (time, byte offset); a hint, checked before use, not chained
//
// # Format 2 (session.json "format": 2)
//
// Each .cast file is asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/):
// a JSON header line, then one JSON array per event: [seconds, code, data].
//
// Terminal (pty) channels use the standard codes "o" (output), "i" (input)
// and "r" (resize, "COLSxROWS"), so `asciinema play` replays them. A chunk
// of terminal output or input that is not valid UTF-8 is recorded twice:
// as text (with U+FFFD, for players) and as exact bytes, base64-encoded,
// under "x-o-bytes" or "x-i-bytes".
//
// Channels without a terminal (exec, subsystems such as sftp, scp, rsync,
// port forwards) carry exact bytes, often binary and often large. Their
// header names a data file, "x_data": "<n>.raw", and their bytes go there
// raw, in the order they were relayed, in both directions. Their events
// "x-stdout", "x-stderr" and "x-stdin" keep the timing and refer to the
// bytes: the data is "OFFSET+LENGTH", the bytes at OFFSET of <n>.raw,
// LENGTH long. The references of a channel follow each other without gap
// or overlap. The writer writes the bytes before the event that refers to
// them, and both before the bytes are forwarded; a crash between the two
// leaves bytes in <n>.raw that no event refers to, which were not
// forwarded. A gigabyte of exec output so costs a gigabyte of <n>.raw and
// about 16 bytes of events per 32 KiB packet (1.0005 bytes on disk per
// byte relayed), where format 1 spent 1.33.
//
// Extension events "x-env", "x-exec", "x-subsystem", "x-signal",
// "x-break", "x-eof", "x-exit-status", "x-exit-signal", "x-start-refused"
// and "x-close" (for a port forward: its destination and byte counts)
// complete the picture. File transfers parsed from sftp and scp are
// "x-file" events (a JSON object: protocol, direction, path, size,
// sha256), sftp metadata operations "x-file-op", and a stream that could
// not be parsed "x-file-parse-error". In a moderated session, "x-moderator"
// events say what the moderators did, one plain line of text each
// ("watched by kenji" at a channel's start, "kenji joined", "kenji left",
// "no moderator watches: input held", "kenji held the input", "kenji
// released the input", "kenji said: …", "kenji ended the session: …"):
// the timeline shows them as kind "moderator", replay always as markers.
// Players ignore codes they do not know.
//
// # Format 1 (recordings made before; no "format" in session.json)
//
// The same, except that no channel has a data file: "x-stdout", "x-stderr"
// and "x-stdin" carry the exact bytes base64-encoded in the event itself.
// Every reader (replay, export, verify, watch, the console's player and
// search, shipping to an object store, retention, crash recovery) reads
// both formats; a channel's header says which it is. OpenChannel opens a
// channel with its data file, and Event.Bytes returns an event's exact
// bytes either way.
//
// # Integrity
//
// See chain.go: every file of a channel (.cast and .raw alike) is cut into
// chunks of at most 1 MiB or one second, each synced and hash-chained in
// chain.jsonl; the seal signs the chain's head and the metadata's hash
// with the node's ed25519 recording key. Verify names modified, removed,
// swapped and truncated chunks, and files or bytes the chain does not
// hold; Recover seals the recordings a crash left open.
//
// The relay's path pays for writing, not for hashing or syncing: a chunk
// is read back from the page cache, hashed, synced and chained by another
// goroutine while the relay writes the next (one chunk in flight per
// file). The bytes of channels that write less than a chunk a second
// (interactive ones) are chained by the node's sync pass: one goroutine
// that, once a second, makes a chunk of every such channel, syncs them
// all with one syncfs of their file system, writes their chain records
// and syncs those with one more (syncpass.go). A chunk of a data file is
// chained before the chunk of events that refers to it. Where syncfs
// does not report writeback errors (Linux before 5.8), or once it has
// reported one for a recording directory, the pass fsyncs file by file.
//
// So the chain vouches for a chunk as it was in the file when read back,
// within about a second of being written, not as it was in memory: a
// process that could change the file in that second runs as sekisho or
// as root, and can read the recording key that signs the seal anyway.
//
// # Guarantees
//
// The relay hands data to a Channel before it forwards it, and a Channel
// returns only once the bytes (and, for exact bytes, the event that refers
// to them) are written to the files: a crash of the process loses nothing
// that was forwarded, and what was written becomes durable within about a
// second (a crash of the machine loses at most that). A keystroke and its
// echo cost one write each, the least under that rule. If the bytes could
// not be written, the Channel returns the write error; the caller must
// then stop relaying (fail closed); the Channel stays failed and every
// later write returns the same error. A failure found later, by a sync,
// fails the session through Session.OnFailure.
package recording
