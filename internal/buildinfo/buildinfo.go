// Package buildinfo says which sekisho this is, from the build
// information the Go toolchain stamps into every binary: the module's
// version, the commit it was built from and the Go version.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info is what a binary knows of its own build.
type Info struct {
	// Version is the module's version: a release tag, or a pseudo-version
	// made from the commit when built from a checkout; "(devel)" when the
	// build had no version control information.
	Version string
	// Commit is the full revision built, Time its commit time (RFC 3339),
	// Modified whether the checkout had uncommitted changes; empty and
	// false when unknown.
	Commit   string
	Time     string
	Modified bool
	// Go is the toolchain's version, such as go1.26.8.
	Go string
}

// Get reads the running binary's build information.
func Get() Info {
	info := Info{Version: "(devel)", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if bi.Main.Version != "" {
		info.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// ShortCommit is the commit's first 12 hex digits, with "+dirty" when
// the checkout had uncommitted changes; "unknown" without one.
func (i Info) ShortCommit() string {
	c := i.Commit
	if c == "" {
		return "unknown"
	}
	if len(c) > 12 {
		c = c[:12]
	}
	if i.Modified {
		c += "+dirty"
	}
	return c
}

// String is the one line `sekisho version` prints.
func (i Info) String() string {
	s := fmt.Sprintf("sekisho %s (commit %s", i.Version, i.ShortCommit())
	if i.Time != "" {
		s += ", " + i.Time
	}
	return s + fmt.Sprintf(", %s %s/%s)", i.Go, runtime.GOOS, runtime.GOARCH)
}
