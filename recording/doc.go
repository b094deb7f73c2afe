// Package recording owns sekisho's session recordings: the on-disk format,
// the writer that the relay hands every byte to before it forwards it, the
// reader, and terminal replay.
//
// # Layout
//
// A session is a directory named by its UUID under the recording directory:
//
//	<dir>/<session-id>/session.json   metadata, rewritten when the session ends
//	<dir>/<session-id>/<n>.cast       one file per session channel, n = 1, 2, …
//	<dir>/<session-id>/chain.jsonl    the integrity chain: one line per chunk of a .cast file
//	<dir>/<session-id>/seal.json      the signed seal, once the session ended (or was recovered)
//	<dir>/<session-id>/upload.json    upload progress, when the zone has an object store
//	<dir>/<session-id>/<n>.cast.idx   seek index (time, byte offset); a hint, checked before use, not chained
//
// Each .cast file is asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/):
// a JSON header line, then one JSON array per event: [seconds, code, data].
// Terminal (pty) channels use the standard codes "o" (output), "i" (input)
// and "r" (resize, "COLSxROWS"), so `asciinema play` replays them. Channels
// without a pty carry exact bytes, base64-encoded, under the extension
// codes "x-stdout", "x-stderr" and "x-stdin", because exec and sftp data is
// often binary. On a terminal channel, a chunk that is not valid UTF-8 is
// recorded twice: as text (with U+FFFD, for players) and as exact bytes
// under "x-o-bytes" or "x-i-bytes". Extension events "x-env", "x-exec",
// "x-subsystem", "x-signal", "x-break", "x-eof", "x-exit-status",
// "x-exit-signal", "x-start-refused" and "x-close" (for a port forward:
// its destination and byte counts) complete the picture. File transfers
// parsed from sftp and scp are "x-file" events (a JSON object: protocol,
// direction, path, size, sha256), sftp metadata operations "x-file-op",
// and a stream that could not be parsed "x-file-parse-error".
// Players ignore codes they do not know.
//
// # Integrity
//
// See chain.go: chunks of at most 1 MiB or one second, fsynced and
// hash-chained in chain.jsonl; the seal signs the chain's head and the
// metadata's hash with the node's ed25519 recording key. Verify names
// modified, removed, swapped and truncated chunks; Recover seals the
// recordings a crash left open.
//
// # Guarantees
//
// The relay hands data to a Channel before it forwards it, and a Channel
// returns the write error if the bytes could not be written to the file.
// The caller must then stop relaying (fail closed); the Channel stays
// failed and every later write returns the same error.
package recording
