package recording_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/internal/miniotest"
	"github.com/sekisho/sekisho/recording"
)

// MinIO refuses a second put with If-None-Match: *; a store that takes it
// is named, so that a node of several refuses to start on it.
func TestCheckConditionalWrites(t *testing.T) {
	m := miniotest.Start(t)
	st := m.Bucket(t, "conditional")
	if err := st.CheckConditionalWrites(context.Background()); err != nil {
		t.Fatalf("MinIO: %v", err)
	}
	if keys := m.Objects(t, "conditional", ""); len(keys) != 0 {
		t.Errorf("the probe left %v", keys)
	}

	// A store that takes every put: the proxy answers puts of probes
	// itself, as a store ignoring the precondition would.
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: m.Addr})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/.sekisho-probe/") {
			w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
			w.WriteHeader(http.StatusOK)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer srv.Close()
	lax, err := recording.NewS3Store(recording.S3Config{Name: "lax", Endpoint: srv.Listener.Addr().String(), Bucket: "conditional",
		AccessKey: miniotest.User, SecretKey: miniotest.Password, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	err = lax.CheckConditionalWrites(context.Background())
	if !errors.Is(err, recording.ErrNoConditionalWrites) || !strings.Contains(err.Error(), "recording store lax") {
		t.Errorf("a store that takes both puts: %v, want ErrNoConditionalWrites naming it", err)
	}
}
