package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A demo directory is held by one demo at a time: a second is refused
// with who holds it and what to do, and the directory is free again once
// the holder lets go. (e2e's TestDemoDirectoryHeld kills the holder with
// SIGKILL.)
func TestLockDemoDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	first, err := lockDemoDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "demo.lock")); strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("demo.lock holds %q, want the holder's pid %d", b, os.Getpid())
	}
	second, err := lockDemoDir(dir)
	if err == nil {
		second.Close()
		t.Fatal("a second demo took a held directory")
	}
	for _, want := range []string{dir + " is in use by another demo (pid " + fmt.Sprint(os.Getpid()) + ")", "kill " + fmt.Sprint(os.Getpid()), "--dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q lacks %q", err, want)
		}
	}
	first.Close()
	again, err := lockDemoDir(dir)
	if err != nil {
		t.Fatalf("the directory once its holder let go: %v", err)
	}
	again.Close()
}
