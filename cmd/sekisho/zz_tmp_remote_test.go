package main

import (
	"context"
	"crypto/ed25519"
	"io"
	"testing"
)

func TestRemoteTmpMessages(t *testing.T) {
	env := newRemoteEnv(t)
	srv := startEchoServer(t, env, 0)
	other := env.hostKey
	_ = other
	cfg := env.writeConfig(t, srv.addr, remoteOther())
	_, err := runRemote(context.Background(), []string{"grants", "--config", cfg, "-i", env.clientKeyFile, "--as", "kenji"}, io.Discard, io.Discard)
	t.Log(err)
	cfg = env.writeConfig(t, srv.addr, env.hostKey)
	_, err = runRemote(context.Background(), []string{"grants", "--config", cfg, "-i", cfg, "--as", "kenji"}, io.Discard, io.Discard)
	t.Log(err)
	_, err = runRemote(context.Background(), []string{"grants", "--config", cfg, "--as", "nobody"}, io.Discard, io.Discard)
	t.Log(err)
	_, err = runRemote(context.Background(), []string{"grants", "--server", "127.0.0.1:1", "--known-hosts", "/nonexistent"}, io.Discard, io.Discard)
	t.Log(err)
}

func remoteOther() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(make([]byte, 32)) }
