package recording

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

const validCast = `{"version":2,"width":80,"height":24,"timestamp":1700000000,"title":"a@b (x)","env":{"TERM":"xterm"},"x_session":"4f1c5f5e-3b5a-4a43-9a51-3f0c2b9e8d10","x_channel":1,"x_kind":"shell","x_pty":true}
[0.000100,"i","ls\r"]
[0.250000,"o","caf\u00e9 \u6771\r\n\u001b[31mred\u001b[0m"]

[1.5,"r","100x30"]
[2,"x-stdout","AAEC/w=="]
[2.5,"x-exit-status","0"]
`

func TestCastReader(t *testing.T) {
	cr, err := NewCastReader(strings.NewReader(validCast), "v.cast")
	if err != nil {
		t.Fatal(err)
	}
	wantH := Header{Version: 2, Width: 80, Height: 24, Timestamp: 1700000000, Title: "a@b (x)",
		Env: map[string]string{"TERM": "xterm"}, Session: "4f1c5f5e-3b5a-4a43-9a51-3f0c2b9e8d10", Channel: 1, Kind: "shell", PTY: true}
	if h := cr.Header(); !reflect.DeepEqual(h, wantH) {
		t.Errorf("header %+v, want %+v", h, wantH)
	}
	want := []Event{
		{Time: 0.0001, Code: "i", Data: "ls\r"},
		{Time: 0.25, Code: "o", Data: "café 東\r\n\x1b[31mred\x1b[0m"},
		{Time: 1.5, Code: "r", Data: "100x30"},
		{Time: 2, Code: "x-stdout", Data: "AAEC/w=="},
		{Time: 2.5, Code: "x-exit-status", Data: "0"},
	}
	var got []Event
	for {
		e, err := cr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events\n got %+v\nwant %+v", got, want)
	}
	if b, err := got[3].Bytes(); err != nil || !bytes.Equal(b, []byte{0, 1, 2, 0xff}) {
		t.Errorf("Bytes of %+v = %q, %v", got[3], b, err)
	}
	if b, err := got[1].Bytes(); err != nil || string(b) != got[1].Data {
		t.Errorf("Bytes of %+v = %q, %v", got[1], b, err)
	}
	if _, err := (Event{Code: "x-stdin", Data: "!!"}).Bytes(); err == nil {
		t.Error("Bytes of bad base64 succeeded")
	}
	// EOF stays EOF.
	if _, err := cr.Next(); err != io.EOF {
		t.Errorf("Next after EOF = %v", err)
	}
}

func TestCastReaderErrors(t *testing.T) {
	const h = `{"version":2,"width":80,"height":24}` + "\n"
	for _, tc := range []struct {
		name, in string
		newErr   string // error of NewCastReader, or ""
		nextErr  string // error of the first failing Next
	}{
		{"empty", "", "c: empty recording", ""},
		{"bad header", "{\n", "c:1: bad header: ", ""},
		{"header not an object", "[1,2]\n", "c:1: bad header: ", ""},
		{"version 1", `{"version":1}` + "\n", "c:1: asciicast version 1, want 2", ""},
		{"no version", "{}\n", "c:1: asciicast version 0, want 2", ""},
		{"null header", "null\n", "c:1: asciicast version 0, want 2", ""},
		{"event not an array", h + `{"a":1}` + "\n", "", "c:2: not an event [time, code, data]"},
		{"two fields", h + `[1,"o"]` + "\n", "", "c:2: not an event [time, code, data]"},
		{"four fields", h + `[1,"o","a","b"]` + "\n", "", "c:2: not an event [time, code, data]"},
		{"time a string", h + "\n" + `["1","o","a"]` + "\n", "", "c:3: not an event [time, code, data]"},
		{"code a number", h + `[1,2,"a"]` + "\n", "", "c:2: not an event [time, code, data]"},
		{"data a number", h + `[1,"o",3]` + "\n", "", "c:2: not an event [time, code, data]"},
		{"truncated last event", h + `[1,"o","a"]` + "\n" + `[2,"o","b`, "", "c:3: the recording ends with a truncated event"},
		{"truncated after a blank line", h + "\n" + `[2,"o"`, "", "c:3: the recording ends with a truncated event"},
		{"broken line without newline", h + `[2,"o",1]`, "", "c:2: the recording ends with a truncated event"},
		{"line too long", h + `[1,"o","` + strings.Repeat("a", maxLine) + `"]` + "\n", "", "c:2: line longer than 16777216 bytes"},
		{"header too long", `{"title":"` + strings.Repeat("a", maxLine) + `"}`, "c:1: line longer than 16777216 bytes", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cr, err := NewCastReader(strings.NewReader(tc.in), "c")
			if tc.newErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.newErr) {
					t.Fatalf("NewCastReader = %v, want %q", err, tc.newErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewCastReader: %v", err)
			}
			for {
				_, err := cr.Next()
				if err == nil {
					continue
				}
				if errors.Is(err, io.EOF) || err.Error() != tc.nextErr {
					t.Fatalf("Next = %v, want %q", err, tc.nextErr)
				}
				if truncated := strings.Contains(tc.nextErr, "truncated"); errors.Is(err, ErrTruncated) != truncated {
					t.Fatalf("errors.Is(%v, ErrTruncated) = %v, want %v", err, !truncated, truncated)
				}
				return
			}
		})
	}
}

// A last event whose newline is missing is read when it is whole.
func TestCastReaderNoFinalNewline(t *testing.T) {
	cr, err := NewCastReader(strings.NewReader(`{"version":2}`+"\n"+`[1,"o","a"]`), "c")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := cr.Next(); err != nil || !reflect.DeepEqual(e, Event{Time: 1, Code: "o", Data: "a"}) {
		t.Fatalf("Next = %+v, %v", e, err)
	}
	if _, err := cr.Next(); err != io.EOF {
		t.Fatalf("Next at the end = %v, want io.EOF", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errTest }

func TestCastReaderReadError(t *testing.T) {
	if _, err := NewCastReader(errReader{}, "c"); !errors.Is(err, errTest) {
		t.Fatalf("NewCastReader = %v, want %v", err, errTest)
	}
	cr, err := NewCastReader(io.MultiReader(strings.NewReader(`{"version":2}`+"\n"), errReader{}), "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cr.Next(); !errors.Is(err, errTest) {
		t.Fatalf("Next = %v, want %v", err, errTest)
	}
}

func FuzzCastReader(f *testing.F) {
	f.Add([]byte(validCast))
	f.Add([]byte(""))
	f.Add([]byte("\n\n"))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":2}` + "\n[1,\"o\"]\n"))
	f.Add([]byte(`{"version":2}` + "\n[1e999,\"o\",\"x\"]\n"))
	f.Add([]byte(`{"version":2}` + "\n[1,\"x-stdout\",\"%%%\"]\n[1,\"x-stdin\",\"AA\"]\n"))
	f.Add([]byte(`{"version":2}` + "\n[1,\"o\",\"\xff\xfe\\ud800\"]\r\n[\n"))
	f.Add([]byte(`{"version":"2","width":-1,"env":{"TERM":1}}` + "\n"))
	f.Add([]byte(validCast[:len(validCast)/2]))
	f.Fuzz(func(t *testing.T, data []byte) {
		cr, err := NewCastReader(bytes.NewReader(data), "f")
		if err != nil {
			if cr != nil {
				t.Fatalf("NewCastReader returned a reader and %v", err)
			}
			return
		}
		if v := cr.Header().Version; v != 2 {
			t.Fatalf("accepted version %d", v)
		}
		// Every Next consumes at least one line.
		for i := 0; ; i++ {
			if i > bytes.Count(data, []byte("\n"))+1 {
				t.Fatalf("Next returned more events than %q has lines", data)
			}
			e, err := cr.Next()
			if err != nil {
				if err != io.EOF && !strings.HasPrefix(err.Error(), "f:") {
					t.Fatalf("error %q does not name the file", err)
				}
				break
			}
			b, err := e.Bytes()
			if err == nil && !strings.HasPrefix(e.Code, "x-std") && string(b) != e.Data {
				t.Fatalf("Bytes of %+v = %q", e, b)
			}
		}
	})
}
