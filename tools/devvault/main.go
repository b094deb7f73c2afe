// Command devvault runs a real, single-process, in-memory Vault server on
// loopback for sekisho's demo and end-to-end tests.
//
// It is built from Vault's own core with three plugins: the SSH and
// transit secrets engines and AppRole. It initialises and unseals itself,
// writes the root token to -token-file (mode 0600) and serves the real
// Vault HTTP API until it receives SIGINT or SIGTERM. Nothing is
// persisted: every start is a new Vault. With -unseal-key-file it also
// writes its one unseal key, so that a test can seal it (sys/seal) and
// unseal it again (sys/unseal). It is a development tool and is never
// part of the sekisho binary.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/builtin/credential/approle"
	"github.com/hashicorp/vault/builtin/logical/ssh"
	"github.com/hashicorp/vault/builtin/logical/transit"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8200", "address to serve the Vault HTTP API on (loopback only)")
	tokenFile := flag.String("token-file", "", "file to write the root token to (mode 0600); required")
	addrFile := flag.String("addr-file", "", "file to write the API address to once serving (optional)")
	unsealKeyFile := flag.String("unseal-key-file", "", "file to write the unseal key to, hex (mode 0600; optional, for tests that seal this Vault)")
	flag.Parse()
	if *tokenFile == "" {
		log.Fatal("devvault: -token-file is required")
	}
	if err := run(*listen, *tokenFile, *addrFile, *unsealKeyFile); err != nil {
		log.Fatalf("devvault: %v", err)
	}
}

func run(listen, tokenFile, addrFile, unsealKeyFile string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: devvault serves on loopback addresses only", listen)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "devvault", Level: hclog.Warn})
	backend, err := inmem.NewInmem(nil, logger)
	if err != nil {
		return err
	}
	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:           backend,
		Logger:             logger,
		DisableMlock:       true,
		BuiltinRegistry:    registry{},
		LogicalBackends:    map[string]logical.Factory{"ssh": ssh.Factory, "transit": transit.Factory},
		CredentialBackends: map[string]logical.Factory{"approle": approle.Factory},
	})
	if err != nil {
		return fmt.Errorf("new core: %w", err)
	}
	ctx := context.Background()
	res, err := core.Initialize(ctx, &vault.InitParams{
		BarrierConfig:    &vault.SealConfig{SecretShares: 1, SecretThreshold: 1},
		RecoveryConfig:   &vault.SealConfig{SecretShares: 1, SecretThreshold: 1},
		LegacyShamirSeal: true,
	})
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	for _, key := range res.SecretShares {
		if _, err := core.Unseal(key); err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		standby, _ := core.Standby()
		if !core.Sealed() && !standby {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("core did not become active within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.WriteFile(tokenFile, []byte(res.RootToken+"\n"), 0o600); err != nil {
		return err
	}
	if unsealKeyFile != "" {
		if err := os.WriteFile(unsealKeyFile, []byte(hex.EncodeToString(res.SecretShares[0])+"\n"), 0o600); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: vaulthttp.Handler.Handler(&vault.HandlerProperties{
			Core:           core,
			ListenerConfig: &configutil.Listener{},
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	addr := "http://" + ln.Addr().String()
	if addrFile != "" {
		if err := os.WriteFile(addrFile, []byte(addr+"\n"), 0o600); err != nil {
			return err
		}
	}
	fmt.Printf("devvault serving on %s\n", addr)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-sigs:
	case err := <-errc:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return core.Shutdown()
}

// registry is the plugin catalog's view of the built-in plugins: just the
// SSH and transit secrets engines and AppRole.
type registry struct{}

var builtins = map[consts.PluginType]map[string]logical.Factory{
	consts.PluginTypeSecrets:    {"ssh": ssh.Factory, "transit": transit.Factory},
	consts.PluginTypeCredential: {"approle": approle.Factory},
}

func (registry) Contains(name string, t consts.PluginType) bool {
	_, ok := builtins[t][name]
	return ok
}

func (registry) Get(name string, t consts.PluginType) (func() (interface{}, error), bool) {
	f, ok := builtins[t][name]
	if !ok {
		return nil, false
	}
	return func() (interface{}, error) { return f, nil }, true
}

func (registry) Keys(t consts.PluginType) []string {
	var keys []string
	for k := range builtins[t] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (registry) DeprecationStatus(name string, t consts.PluginType) (consts.DeprecationStatus, bool) {
	_, ok := builtins[t][name]
	return consts.Supported, ok
}

func (registry) IsBuiltinEntPlugin(string, consts.PluginType) bool { return false }
