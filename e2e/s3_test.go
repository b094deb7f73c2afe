package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sekisho/sekisho/internal/hardening"
)

// minioServer is a real MinIO server on loopback.
type minioServer struct {
	addr, data string
	cmd        *exec.Cmd
	exited     chan struct{}
	client     *minio.Client
}

const minioUser, minioPassword = "sekisho-test", "sekisho-test-secret"

// startMinIO runs bin/minio on a free port (or on addr, to restart one)
// with its data in data, and waits until it answers.
func startMinIO(t *testing.T, addr, data string) *minioServer {
	t.Helper()
	bin := filepath.Join(env.root, "bin", "minio")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run `make test` (it builds bin/minio)", bin)
	}
	if addr == "" {
		addr = "127.0.0.1:" + freePort(t)
		data = t.TempDir()
	}
	m := &minioServer{addr: addr, data: data, exited: make(chan struct{})}
	m.cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:"+freePort(t), data)
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPassword, "MINIO_BROWSER=off")
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := &syncBuffer{}
	m.cmd.Stdout, m.cmd.Stderr = out, out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(m.stop)
	c, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioPassword, ""), Secure: false})
	if err != nil {
		t.Fatal(err)
	}
	m.client = c
	waitUntil(t, 60*time.Second, "MinIO to answer", func() bool {
		select {
		case <-m.exited:
			t.Fatalf("minio exited:\n%s", out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.ListBuckets(ctx)
		return err == nil
	})
	return m
}

func (m *minioServer) stop() {
	m.cmd.Process.Signal(os.Interrupt)
	select {
	case <-m.exited:
	case <-time.After(20 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// objects lists the keys under prefix.
func (m *minioServer) objects(t *testing.T, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range m.client.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// liveChainFiles counts, per file, the chunks of live recording id whose
// chain records were shipped to bucket.
func (m *minioServer) liveChainFiles(t *testing.T, bucket, id string) map[string]int {
	t.Helper()
	files := map[string]int{}
	for _, key := range m.objects(t, bucket, id+"/live/chain/") {
		o, err := m.client.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			continue // replaced meanwhile
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r struct{ File string }
			if json.Unmarshal([]byte(line), &r) == nil && r.File != "" {
				files[r.File]++
			}
		}
	}
	return files
}

// shipped reports whether recording id is in bucket whole: its seal, chain
// and metadata, and none of the objects it is shipped through while live
// (the seal goes first, so that the first node to seal wins).
func (m *minioServer) shipped(t *testing.T, bucket, id string) bool {
	t.Helper()
	keys := " " + strings.Join(m.objects(t, bucket, id+"/"), " ") + " "
	return strings.Contains(keys, " "+id+"/seal.json ") && strings.Contains(keys, " "+id+"/chain.jsonl ") &&
		strings.Contains(keys, " "+id+"/session.json ") && !strings.Contains(keys, " "+id+"/live/")
}

// s3Variant starts a server whose JP recordings go to bucket on m.
func s3Variant(t *testing.T, m *minioServer, bucket string) *variant {
	t.Helper()
	if err := m.client.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	os.WriteFile(filepath.Join(keys, "access"), []byte(minioUser+"\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "secret"), []byte(minioPassword+"\n"), 0o600)
	return startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", fmt.Sprintf(`
recording_stores:
  - name: jp-object-store
    residency: [JP]
    s3:
      endpoint: %s
      bucket: %s
      access_key_file: %s/access
      secret_key_file: %s/secret
      insecure: true
      stall_timeout: 2s
rules:
`, m.addr, bucket, keys, keys), 1)
	})
}

// JP recordings go to the JP object store as they are made; the spool
// copy goes once uploaded; verify and replay fetch it back.
func TestRecordingsStoredInTheirZone(t *testing.T) {
	t.Parallel()
	m := startMinIO(t, "", "")
	v := s3Variant(t, m, "sekisho-jp")
	marker := "stored-in-jp-" + randHex(t)
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo "+marker), nil); r.code != 0 || !strings.Contains(r.stdout, marker) {
		t.Fatalf("exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	// The SG session stays in the spool: no store is configured for SG.
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo sg"), nil); r.code != 0 {
		t.Fatalf("SG session: exit %d, %q", r.code, r.stderr)
	}
	var id string
	waitUntil(t, 30*time.Second, "the JP recording in the bucket", func() bool {
		for _, k := range m.objects(t, "sekisho-jp", "") {
			if strings.HasSuffix(k, "/seal.json") {
				id = strings.TrimSuffix(k, "/seal.json")
				return m.shipped(t, "sekisho-jp", id)
			}
		}
		return false
	})
	keys := strings.Join(m.objects(t, "sekisho-jp", id+"/"), " ")
	for _, want := range []string{id + "/session.json", id + "/chain.jsonl", id + "/chunks/00000001"} {
		if !strings.Contains(keys, want) {
			t.Errorf("bucket lacks %s: %s", want, keys)
		}
	}
	waitUntil(t, 30*time.Second, "the spool copy to go", func() bool {
		_, err := os.Stat(filepath.Join(v.dir, "recordings", id))
		return os.IsNotExist(err)
	})
	if len(m.objects(t, "sekisho-jp", "")) == 0 || strings.Contains(strings.Join(m.objects(t, "sekisho-jp", ""), " "), "web-sg") {
		t.Error("unexpected bucket content")
	}
	out, err := v.cli(t, "verify", id)
	if err != nil || !strings.Contains(out, "OK, complete") {
		t.Fatalf("verify from the store: %v\n%s", err, out)
	}
	out, err = v.cli(t, "replay", "--events", id)
	if err != nil || !strings.Contains(streams(t, out, "x-stdout"), marker) {
		t.Errorf("replay from the store: %v\n%s", err, out)
	}
}

// The zone's store down: its sessions are refused, other zones go on; a
// live session ends when the store stops taking its chunks; the upload
// resumes after a restart once the store is back.
func TestRecordingStoreOutageFailsClosed(t *testing.T) {
	t.Parallel()
	m := startMinIO(t, "", "")
	v := s3Variant(t, m, "sekisho-jp")

	// A live session, then the store goes away.
	l := startLiveRunning(t, v, "aiko", "aiko+db-jp-01", "echo started; while true; do echo tick; sleep 0.2; done")
	m.stop()
	stopped := time.Now()
	if stderr := l.endsWithin(t, 60*time.Second, "with its store down"); !strings.Contains(stderr, "the recording store of zone JP stopped taking this session's recording") {
		t.Errorf("the technician was not told why: %q", stderr)
	}
	endedAfter := time.Since(stopped)

	// New JP sessions are refused; SG sessions go on.
	r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo should-not-run"), nil)
	if r.code == 0 || strings.Contains(r.stdout, "should-not-run") || !strings.Contains(r.stderr, "the recording store of zone JP is unavailable") {
		t.Errorf("JP with its store down: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo sg-ok"), nil); r.code != 0 || r.stdout != "sg-ok\n" {
		t.Errorf("SG with the JP store down: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}

	// sekisho stopped while the upload is pending; the store back and
	// sekisho started again: the upload resumes from the spool.
	v.kill(t, syscall.SIGTERM)
	restarted := startMinIO(t, m.addr, m.data)
	v.start(t)
	waitUntil(t, 60*time.Second, "the interrupted recording to reach the bucket", func() bool {
		for _, k := range restarted.objects(t, "sekisho-jp", "") {
			if strings.HasSuffix(k, "/seal.json") {
				return true
			}
		}
		return false
	})
	if !strings.Contains(v.out.String(), "resuming a recording upload") {
		t.Error("the restart did not resume the upload")
	}
	hardening.Report(t, "partition", "the JP recording store (MinIO) stopped under a live session: the session ended %.1f s later, told why; new JP sessions refused while SG sessions go on; after a restart with the store back the pending upload resumes and the seal reaches the bucket", endedAfter.Seconds())
}

// Retention applies in the object store too.
func TestRetentionInTheObjectStore(t *testing.T) {
	t.Parallel()
	m := startMinIO(t, "", "")
	if err := m.client.MakeBucket(context.Background(), "sekisho-jp", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	os.WriteFile(filepath.Join(keys, "access"), []byte(minioUser+"\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "secret"), []byte(minioPassword+"\n"), 0o600)
	v := startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", fmt.Sprintf(`
retention_interval: 1s
recording_stores:
  - name: jp-object-store
    residency: [JP]
    retention: 2s
    s3:
      endpoint: %s
      bucket: sekisho-jp
      access_key_file: %s/access
      secret_key_file: %s/secret
      insecure: true
rules:
`, m.addr, keys, keys), 1)
	})
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo short-lived"), nil); r.code != 0 {
		t.Fatalf("exit %d, %q", r.code, r.stderr)
	}
	waitUntil(t, 30*time.Second, "the recording in the bucket", func() bool { return len(m.objects(t, "sekisho-jp", "")) > 0 })
	waitUntil(t, 60*time.Second, "retention to empty the bucket", func() bool { return len(m.objects(t, "sekisho-jp", "")) == 0 })
	found := false
	for _, e := range v.audit(t) {
		found = found || (e["kind"] == "recording.deleted" && strings.Contains(e["detail"], `"residency":"JP"`))
	}
	if !found {
		t.Error("no recording.deleted audit event")
	}
}
