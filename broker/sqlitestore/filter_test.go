package sqlitestore

import (
	"context"
	"testing"
)

func TestSessionRequestRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	tests := []struct {
		id      string
		request int64
	}{
		{"granted", 42},
		{"no-grant", 0},
		{"large", 1<<62 + 3},
	}
	for _, tc := range tests {
		r := record(tc.id, "aiko", "db-jp-01", base)
		r.Request = tc.request
		if err := s.StartSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range tests {
		got, err := s.Session(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Request != tc.request {
			t.Errorf("session %s: Request = %d, want %d", tc.id, got.Request, tc.request)
		}
	}
}
