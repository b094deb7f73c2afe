package recording

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/hardening"
)

func TestRoutes(t *testing.T) {
	t.Parallel()
	// Object stores are not contacted here: an address nothing answers on.
	s3 := func(name string) *S3Store {
		st, err := NewS3Store(S3Config{Name: name, Endpoint: "127.0.0.1:1", Bucket: name, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	jpS3, sgS3 := s3("jp-s3"), s3("sg-s3")
	tests := []struct {
		name   string
		routes []Route
		want   map[string]string // zone -> store ("" for the spool)
		local  map[string]bool   // zone -> kept on this host
		stores int               // distinct object stores
	}{
		{
			// The README's example with the two stores swapped: JP stays
			// on this host, every other zone goes to Singapore.
			name:   "local zone beside an object store for the rest",
			routes: []Route{{Store: "jp-local", Zones: []string{"JP"}}, {Store: "sg-s3", Zones: []string{"*"}, S3: sgS3}},
			want:   map[string]string{"JP": "jp-local", "jp": "jp-local", "SG": "sg-s3", "KR": "sg-s3"},
			local:  map[string]bool{"JP": true, "SG": false, "KR": false},
			stores: 1,
		},
		{
			name:   "the README's example",
			routes: []Route{{Store: "jp-s3", Zones: []string{"jp"}, S3: jpS3}, {Store: "spool", Zones: []string{"*"}}},
			want:   map[string]string{"JP": "jp-s3", "SG": "spool"},
			local:  map[string]bool{"JP": false, "SG": true},
			stores: 1,
		},
		{
			name:   "local zones among object stores, no *",
			routes: []Route{{Store: "jp-s3", Zones: []string{"JP"}, S3: jpS3}, {Store: "here", Zones: []string{"KR", "TW"}}, {Store: "sg-s3", Zones: []string{"SG", "MY"}, S3: sgS3}},
			want:   map[string]string{"JP": "jp-s3", "KR": "here", "TW": "here", "SG": "sg-s3", "MY": "sg-s3", "US": ""},
			local:  map[string]bool{"JP": false, "KR": true, "TW": true, "SG": false, "US": true},
			stores: 2,
		},
		{
			name:  "no stores",
			want:  map[string]string{"JP": ""},
			local: map[string]bool{"JP": true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := NewRoutes(tc.routes)
			if err != nil {
				t.Fatal(err)
			}
			for zone, want := range tc.want {
				if got := rs.For(zone).Store; got != want {
					t.Errorf("For(%s) = store %q, want %q", zone, got, want)
				}
			}
			for zone, want := range tc.local {
				if got := rs.For(zone).Local(); got != want {
					t.Errorf("For(%s).Local() = %v, want %v", zone, got, want)
				}
			}
			if got := len(rs.ObjectStores()); got != tc.stores {
				t.Errorf("%d object stores, want %d", got, tc.stores)
			}
		})
	}

	for _, dup := range [][]Route{
		{{Store: "a", Zones: []string{"JP"}}, {Store: "b", Zones: []string{"jp"}, S3: jpS3}},
		{{Store: "a", Zones: []string{"*"}, S3: sgS3}, {Store: "b", Zones: []string{"*"}}},
	} {
		if _, err := NewRoutes(dup); err == nil || !strings.Contains(err.Error(), "already stored in a") {
			t.Errorf("a zone routed twice: %v", err)
		}
	}
}

// The uploader follows the routes: a session of a zone kept on this host
// is never started towards the store of "*", nor written down as an
// upload.
func TestUploaderKeepsLocalZonesHere(t *testing.T) {
	t.Parallel()
	sg, err := NewS3Store(S3Config{Name: "sg-s3", Endpoint: "127.0.0.1:1", Bucket: "sg", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRoutes([]Route{{Store: "jp-local", Zones: []string{"JP"}}, {Store: "sg-s3", Zones: []string{"*"}, S3: sg}})
	if err != nil {
		t.Fatal(err)
	}
	root, id, _ := newSession(t)
	u := NewUploader(root, rs, nil)
	defer u.Close()
	if st := u.StoreFor("JP"); st != nil {
		t.Fatalf("JP streamed to %s", st.Name())
	}
	if st := u.StoreFor("SG"); st != sg {
		t.Fatalf("SG streamed to %v", st)
	}
	if err := u.Start(context.Background(), id, "JP", nil); err != nil {
		t.Fatalf("a JP session refused: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, id, uploadFile)); !os.IsNotExist(err) {
		t.Errorf("a JP session has an upload: %v", err)
	}
	hardening.Report(t, "13", "stores jp-local [JP] (no s3) and sg-s3 [\"*\"]: JP routed to jp-local and kept on this host, no upload started; SG and KR to sg-s3; a zone named twice refused")
}
