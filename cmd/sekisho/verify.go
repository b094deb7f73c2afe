package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/node"
	"github.com/sekisho/sekisho/recording"
)

// errVerifyFailed makes `sekisho verify` exit 1 after its report.
var errVerifyFailed = errors.New("the recording does not verify")

// cmdVerify checks a recording's chunks, chain, seal and signature.
//
//	sekisho verify [--config FILE] [--key FILE] [--json] SESSION-ID|DIRECTORY
//
// Offline, give the recording's directory and the published key
// (`sekisho recording-key` > key.pub); no config is needed then.
func cmdVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file (to find a session's recording and the recording key)")
	keyPath := fs.String("key", "", "the recording key's public half (authorized_keys line, from `sekisho recording-key`)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(reorder(args)); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 1 {
		return usageError{msg: "verify: give one session ID or recording directory"}
	}
	arg := fs.Arg(0)
	if fi, err := os.Stat(arg); err == nil && fi.IsDir() && !isRecordingDir(arg) {
		// A folder that holds recordings, as sekisho fetch --out makes.
		if inside, _ := filepath.Glob(filepath.Join(arg, "*", "session.json")); len(inside) > 0 {
			return fmt.Errorf("%s is not a recording's directory but holds %s: give that one (sekisho fetch puts a recording in a folder named by its session)",
				arg, filepath.Dir(inside[0]))
		}
		if !strings.ContainsRune(arg, os.PathSeparator) {
			return fmt.Errorf("%s is a directory without session.json; to verify a recording's directory write it as ./%s", arg, arg)
		}
	}
	var cfg *node.Config
	if *configPath != "" || !isRecordingDir(arg) || *keyPath == "" {
		path, err := findConfig(*configPath)
		if err == nil {
			cfg, err = node.LoadConfig(path)
		}
		if err != nil && (!isRecordingDir(arg) || *keyPath == "") {
			return fmt.Errorf("%w (offline, give the recording directory and --key FILE)", err)
		}
	}
	dir := arg
	if !isRecordingDir(arg) {
		root, cleanup, err := recordingRoot(ctx, cfg, arg)
		if err != nil {
			return err
		}
		defer cleanup()
		dir, _ = recording.SessionDir(root, arg)
	}
	var pub ed25519.PublicKey
	var err error
	if *keyPath != "" {
		pub, err = readPublicKey(*keyPath)
	} else {
		pub, err = configRecordingKey(cfg)
	}
	if err != nil {
		return err
	}
	v, err := recording.Verify(dir, pub)
	if err != nil {
		return err
	}
	// With the server's config, the seal is also checked against the one
	// the register recorded: a recording cut short and re-sealed, or
	// stripped of its seal, does not pass.
	if cfg != nil {
		store, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		r, err := store.Session(ctx, filepath.Base(dir))
		store.Close()
		if err != nil && !errors.Is(err, broker.ErrNotFound) {
			return err
		}
		v.CheckRegister(err == nil, r.Ended(), r.RecordingHead, r.RecordingChunks)
	} else {
		v.CheckOffline()
	}
	if *asJSON {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Println(string(b))
	} else {
		printVerification(os.Stdout, v, pub)
	}
	if !v.OK {
		return errVerifyFailed
	}
	return nil
}

func printVerification(w io.Writer, v recording.Verification, pub ed25519.PublicKey) {
	state := "complete"
	if !v.Complete {
		state = "INCOMPLETE"
	}
	if !v.Sealed {
		state = "not sealed"
	}
	verdict := "OK"
	if !v.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "%s: %s, %s; %d chunks, %d bytes", v.Session, verdict, state, v.Chunks, v.Bytes)
	if v.Signed {
		fmt.Fprintf(w, "; seal signed by %s", recording.KeyFingerprint(pub))
	}
	fmt.Fprintln(w)
	if v.Reason != "" {
		fmt.Fprintf(w, "  %s\n", v.Reason)
	}
	if v.Recovered > 0 {
		fmt.Fprintf(w, "  %d bytes written after the last chunk were chained when the server restarted\n", v.Recovered)
	}
	for _, p := range v.Problems {
		where := ""
		if p.File != "" {
			where = p.File + ": "
		}
		fmt.Fprintf(w, "  %s%s\n", where, p.What)
	}
}

func isRecordingDir(p string) bool {
	if !strings.ContainsRune(p, os.PathSeparator) {
		return false
	}
	_, err := os.Stat(filepath.Join(p, "session.json"))
	return err == nil
}

// readPublicKey reads an ed25519 public key in authorized_keys form.
func readPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("recording key: %w", err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("recording key %s: not an authorized_keys line: %v", path, err)
	}
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, fmt.Errorf("recording key %s: not an ed25519 key", path)
	}
	edk, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("recording key %s: not an ed25519 key", path)
	}
	return edk, nil
}

// configRecordingKey is the public half of the config's recording key.
func configRecordingKey(cfg *node.Config) (ed25519.PublicKey, error) {
	path := cfg.Path(cfg.RecordingKey)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("recording key %s: %w (it is made when the server first starts; offline, pass --key FILE)", path, err)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("recording key %s: %w", path, err)
	}
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		return k.Public().(ed25519.PublicKey), nil
	case *ed25519.PrivateKey:
		return k.Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("recording key %s: not an ed25519 key", path)
}

// cmdRecordingKey prints the public half of the recording key, for
// reviewers who verify recordings offline.
func cmdRecordingKey(_ context.Context, args []string) error {
	cfg, _, err := parseWithConfig("recording-key", args, nil)
	if err != nil {
		return err
	}
	pub, err := configRecordingKey(cfg)
	if err != nil {
		return err
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	fmt.Printf("%s sekisho-recording-key\n", strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))))
	fmt.Fprintf(os.Stderr, "fingerprint %s; verify offline with: sekisho verify --key FILE RECORDING-DIRECTORY\n", ssh.FingerprintSHA256(pk))
	return nil
}
