package session

import (
	"bytes"
	"testing"

	"golang.org/x/crypto/ssh"
)

// A target's exit status or signal is relayed only when it parses, and
// then as sekisho marshals it again: trailing or missing bytes never
// reach the technician's client.
func TestParseExit(t *testing.T) {
	status := ssh.Marshal(exitStatus{7})
	signal := ssh.Marshal(exitSignal{Signal: "KILL", Message: "killed"})
	for _, tc := range []struct {
		name, typ string
		payload   []byte
		ok        bool
		code      string
		data      string
	}{
		{"status", "exit-status", status, true, "x-exit-status", "7"},
		{"status cut short", "exit-status", status[:2], false, "", ""},
		{"status empty", "exit-status", nil, false, "", ""},
		{"status with trailing bytes", "exit-status", append(append([]byte{}, status...), 0), false, "", ""},
		{"signal", "exit-signal", signal, true, "x-exit-signal", "KILL"},
		{"signal cut short", "exit-signal", signal[:len(signal)-3], false, "", ""},
		{"signal name longer than the payload", "exit-signal", []byte{0xff, 0xff, 0xff, 0xff, 'K'}, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload, code, data, ok := parseExit(&ssh.Request{Type: tc.typ, Payload: tc.payload})
			if ok != tc.ok || code != tc.code || data != tc.data {
				t.Fatalf("parseExit = %q, %q, %v; want %q, %q, %v", code, data, ok, tc.code, tc.data, tc.ok)
			}
			if ok && !bytes.Equal(payload, tc.payload) {
				t.Errorf("relayed payload %x, want %x", payload, tc.payload)
			}
		})
	}
}
