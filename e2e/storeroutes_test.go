package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sekisho/sekisho/internal/hardening"
)

// swappedStoresVariant starts a server with the README's two stores
// swapped: JP stays on this host (a store without s3), every other zone
// goes to bucket sekisho-sg on m.
func swappedStoresVariant(t *testing.T, m *minioServer) *variant {
	t.Helper()
	if err := m.client.MakeBucket(context.Background(), "sekisho-sg", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	os.WriteFile(filepath.Join(keys, "access"), []byte(minioUser+"\n"), 0o600)
	os.WriteFile(filepath.Join(keys, "secret"), []byte(minioPassword+"\n"), 0o600)
	return startVariant(t, func(cfg string) string {
		return strings.Replace(cfg, "\nrules:\n", fmt.Sprintf(`
recording_stores:
  - name: jp-local
    residency: [JP]
  - name: sg-s3
    residency: ["*"]
    s3:
      endpoint: %s
      bucket: sekisho-sg
      access_key_file: %s/access
      secret_key_file: %s/secret
      insecure: true
rules:
`, m.addr, keys, keys), 1)
	})
}

// bucketHolds reports which of needles some object in bucket contains.
func bucketHolds(t *testing.T, m *minioServer, bucket string, needles ...string) map[string]bool {
	t.Helper()
	found := map[string]bool{}
	for _, k := range m.objects(t, bucket, "") {
		obj, err := m.client.GetObject(context.Background(), bucket, k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(obj)
		obj.Close()
		if err != nil {
			t.Fatalf("%s/%s: %v", bucket, k, err)
		}
		for _, n := range needles {
			found[n] = found[n] || strings.Contains(string(b), n)
		}
	}
	return found
}

// sessionsOf waits until v's register holds n ended sessions and returns
// their IDs by target.
func sessionsOf(t *testing.T, v *variant, n int) map[string]string {
	t.Helper()
	ids := map[string]string{}
	waitUntil(t, 30*time.Second, fmt.Sprintf("%d sessions ended", n), func() bool {
		out, _ := v.cli(t, "sessions", "--json")
		var list []session
		json.Unmarshal([]byte(out), &list)
		clear(ids)
		for _, s := range list {
			if s.EndedAt == "" {
				return false
			}
			ids[s.Target] = s.ID
		}
		return len(list) == n
	})
	return ids
}

// A zone a store without s3 names stays on this host, though "*" goes to
// an object store: no byte of a JP session reaches the SG bucket, while
// an SG session goes there; config check says so beforehand.
func TestRecordingsOfALocalZoneStayOffTheOtherZonesBucket(t *testing.T) {
	t.Parallel()
	m := startMinIO(t, "", "")
	v := swappedStoresVariant(t, m)

	out, err := v.cli(t, "config", "check")
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	for _, want := range []string{`(?m)^  JP +jp-local +local spool `, `(?m)^  SG +sg-s3 \(as "\*"\) +s3 bucket sekisho-sg at ` + regexp.QuoteMeta(m.addr)} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("config check does not say %s:\n%s", want, out)
		}
	}

	jpMarker, sgMarker := "jp-stays-"+randHex(t), "sg-goes-"+randHex(t)
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+db-jp-01", "echo "+jpMarker), nil); r.code != 0 || !strings.Contains(r.stdout, jpMarker) {
		t.Fatalf("JP session: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, v.ssh(ctxT(t), "aiko", "aiko+web-sg-01", "echo "+sgMarker), nil); r.code != 0 || !strings.Contains(r.stdout, sgMarker) {
		t.Fatalf("SG session: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	ids := sessionsOf(t, v, 2)
	jp, sg := ids["db-jp-01"], ids["web-sg-01"]
	// The SG session, started after the JP one ended, is in the bucket
	// whole: the JP one would be there by now if it were uploaded.
	waitUntil(t, 30*time.Second, "the SG recording sealed in the bucket", func() bool {
		return m.shipped(t, "sekisho-sg", sg)
	})
	if keys := m.objects(t, "sekisho-sg", jp+"/"); len(keys) > 0 {
		t.Errorf("the JP session reached the SG bucket: %s", strings.Join(keys, " "))
	}
	for _, k := range m.objects(t, "sekisho-sg", "") {
		if !strings.HasPrefix(k, sg+"/") {
			t.Errorf("the SG bucket holds %s, not of the SG session", k)
		}
	}
	found := bucketHolds(t, m, "sekisho-sg", jpMarker, sgMarker)
	if found[jpMarker] {
		t.Error("the JP session's output is in the SG bucket")
	}
	if !found[sgMarker] {
		t.Error("the SG session's output is not in the SG bucket")
	}
	objects := len(m.objects(t, "sekisho-sg", ""))

	// The JP recording is here, sealed, never started as an upload.
	jpDir := filepath.Join(v.dir, "recordings", jp)
	if _, err := os.Stat(filepath.Join(jpDir, "seal.json")); err != nil {
		t.Errorf("the JP recording is not on this host: %v", err)
	}
	if _, err := os.Stat(filepath.Join(jpDir, "upload.json")); !os.IsNotExist(err) {
		t.Errorf("the JP recording was set to upload: %v", err)
	}
	if out, err := v.cli(t, "verify", jp); err != nil || !strings.Contains(out, "OK, complete") {
		t.Errorf("verify the JP recording: %v\n%s", err, out)
	}
	hardening.Report(t, "13", "stores jp-local [JP] (no s3) and sg-s3 [\"*\"] on MinIO: config check names jp-local for JP; a JP session kept on this host, sealed and verifying, 0 of its objects and no byte of its output in the SG bucket (%d objects, all of the SG session, whose output is there)", objects)
}

// A reload that moves a target into a zone another store keeps ends its
// live sessions, telling them why; a move within the same store, and
// sessions on other targets, go on.
func TestReloadMovingATargetToAnotherStoreEndsItsSessions(t *testing.T) {
	t.Parallel()
	m := startMinIO(t, "", "")
	v := swappedStoresVariant(t, m)
	sg := startLive(t, v, "aiko", "aiko+web-sg-01")
	jp := startLive(t, v, "aiko", "aiko+db-jp-01")
	cfg, err := os.ReadFile(v.config)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(cfg), "    residency: SG\n") != 1 {
		t.Fatal("web-sg-01 is not the one SG target of the config")
	}
	// reload puts residency in force for web-sg-01 and returns the
	// server's log line of the reload.
	reloads := 0
	reload := func(residency string) string {
		t.Helper()
		os.WriteFile(v.config, []byte(strings.Replace(string(cfg), "    residency: SG\n", "    residency: "+residency+"\n", 1)), 0o600)
		if out, err := v.cli(t, "reload"); err != nil {
			t.Fatalf("sekisho reload: %v\n%s", err, out)
		}
		reloads++
		var line string
		waitUntil(t, 10*time.Second, "the server to log the reload", func() bool {
			n := 0
			for _, l := range strings.Split(v.out.String(), "\n") {
				if strings.Contains(l, `"msg":"config reloaded`) {
					n++
					line = l
				}
			}
			return n == reloads
		})
		return line
	}

	// SG to KR: "*" keeps KR in the same store, so the session goes on.
	if line := reload("KR"); !strings.Contains(line, `"sessions_ended":0`) || !sg.running() {
		t.Fatalf("moving web-sg-01 within its store ended a session: %s\n%s", line, sg.stderr.String())
	}

	// KR to JP, which stays on this host: the session recorded in the SG
	// bucket ends.
	reloaded := time.Now()
	if line := reload("JP"); !strings.Contains(line, `"sessions_ended":1`) {
		t.Errorf("the reload into JP: %s", line)
	}
	stderr := sg.endsWithin(t, 10*time.Second, "after its target moved to a zone another store keeps")
	endedAfter := time.Since(reloaded)
	const why = "session ended: web-sg-01 is now resident in JP, whose recordings are kept in store jp-local, not in store sg-s3 where this session is recorded; connect again"
	if !strings.Contains(stderr, "sekisho: "+why) {
		t.Errorf("the technician was not told why: %q", stderr)
	}
	if !jp.running() {
		t.Errorf("the session on db-jp-01 ended: %q", jp.stderr.String())
	}
	audited := false
	for _, e := range v.audit(t) {
		audited = audited || (e["kind"] == "session.revoked" && e["target"] == "web-sg-01" && e["detail"] == strings.TrimPrefix(why, "session ended: "))
	}
	if !audited {
		t.Error("the end is not audited as session.revoked with its reason")
	}
	hardening.Report(t, "11", "a reload moving a live session's target from SG to KR (same store, \"*\"): the session runs on; then to JP (kept on this host, not in the SG bucket the session streams to): ended %d ms after the reload command was started, told why, audited; a session on db-jp-01 runs on", endedAfter.Milliseconds())
}
