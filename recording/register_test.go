package recording

import "testing"

// A recording sealed before its first chunk has an empty chain head; the
// register keeps EmptyChainHead for it, so that it is not taken for a
// recording whose seal the register never saw.
func TestCheckRegisterEmptyChain(t *testing.T) {
	for _, tc := range []struct {
		name       string
		registered string
		head       string
		chunks     int
		ok         bool
	}{
		{"sealed empty, registered", RegisterHead(""), "", 0, true},
		{"sealed empty, no seal registered", "", "", 0, false},
		{"sealed with chunks, registered", RegisterHead("abc"), "abc", 2, true},
		{"sealed with chunks, registered as empty", EmptyChainHead, "abc", 2, false},
		{"sealed empty, registered with chunks", "abc", "", 0, false},
	} {
		v := &Verification{Sealed: true, Head: tc.head, Chunks: tc.chunks}
		v.CheckRegister(true, true, tc.registered, tc.chunks)
		if v.OK != tc.ok {
			t.Errorf("%s: OK %v, want %v (%v)", tc.name, v.OK, tc.ok, v.Problems)
		}
	}
}
