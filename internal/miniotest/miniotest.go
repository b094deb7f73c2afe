// Package miniotest starts a real MinIO server for tests: the repository's
// bin/minio (built by `make test`), on a free loopback port, with its data
// in the test's temporary directory. It stops when the test ends.
package miniotest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sekisho/sekisho/recording"
)

// User and Password are the server's root credentials.
const User, Password = "sekisho-test", "sekisho-test-secret"

// Server is a running MinIO.
type Server struct {
	Addr   string
	Client *minio.Client
}

// Start runs bin/minio until the test ends and waits until it answers.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	addr, console := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	cmd := exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, t.TempDir())
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+User, "MINIO_ROOT_PASSWORD="+Password, "MINIO_BROWSER=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	c, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(User, Password, ""), Secure: false})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("minio exited:\n%s", out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.ListBuckets(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MinIO did not answer within 60s: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Server{Addr: addr, Client: c}
}

// Bucket makes a bucket and returns a recording store on it.
func (s *Server) Bucket(t testing.TB, name string) *recording.S3Store {
	t.Helper()
	if err := s.Client.MakeBucket(context.Background(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := recording.NewS3Store(recording.S3Config{Name: name, Endpoint: s.Addr, Bucket: name, AccessKey: User, SecretKey: Password, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// RefusingStore returns a recording store on bucket, which must exist,
// reached through a proxy that refuses (403 AccessDenied) the requests
// refuse picks and passes the others on: a store that stops taking some
// objects, as when a node is cut off between them.
func (s *Server) RefusingStore(t testing.TB, bucket string, refuse func(*http.Request) bool) *recording.S3Store {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: s.Addr})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse(r) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, "<Error><Code>AccessDenied</Code><Message>refused by the test</Message><Resource>%s</Resource></Error>", r.URL.Path)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	st, err := recording.NewS3Store(recording.S3Config{Name: bucket, Endpoint: srv.Listener.Addr().String(), Bucket: bucket,
		AccessKey: User, SecretKey: Password, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Objects lists the keys under prefix in bucket.
func (s *Server) Objects(t testing.TB, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range s.Client.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// binary finds bin/minio at the module's root, above the working
// directory of the test.
func binary() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			bin := filepath.Join(dir, "bin", "minio")
			if _, err := os.Stat(bin); err != nil {
				return "", fmt.Errorf("%s is missing: run `make test` (it builds bin/minio)", bin)
			}
			return bin, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test's directory: bin/minio not found")
		}
		dir = parent
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// LiveChainCovers returns the last chunk of recording id whose chain
// record reached bucket while it was live: the records go in batches
// after their chunks, named by the last chunk they cover.
func (s *Server) LiveChainCovers(t testing.TB, bucket, id string) int {
	t.Helper()
	covered := 0
	for _, k := range s.Objects(t, bucket, id+"/live/chain/") {
		n, _ := strconv.Atoi(strings.TrimLeft(path.Base(k), "0"))
		covered = max(covered, n)
	}
	return covered
}
