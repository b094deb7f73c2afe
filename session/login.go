package session

import (
	"errors"
	"fmt"
	"strings"
)

// maxNameLen bounds technician and target names.
const maxNameLen = 63

// Login is an SSH login name parsed into the technician and the target,
// written technician+target (or technician%target).
type Login struct {
	Technician string
	Target     string
}

// ErrNoTarget is returned for a login that names no target.
var ErrNoTarget = errors.New("no target named in the login")

// ParseLogin splits an SSH login name into technician and target. Names
// use a safe alphabet: lower-case letters, digits, '.', '_' and '-',
// starting with a letter or digit, at most 63 characters. Anything else is
// refused with an error that says what to write instead.
func ParseLogin(s string) (Login, error) {
	i := strings.IndexAny(s, "+%")
	if i < 0 {
		if err := checkName("technician", s); err != nil {
			return Login{}, err
		}
		return Login{Technician: s}, fmt.Errorf("%w: log in as %s+TARGET, for example ssh -p 2222 %s+db-01@bastion", ErrNoTarget, s, s)
	}
	l := Login{Technician: s[:i], Target: s[i+1:]}
	if err := checkName("technician", l.Technician); err != nil {
		return Login{}, err
	}
	if err := checkName("target", l.Target); err != nil {
		return Login{}, err
	}
	return l, nil
}

func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s name: log in as TECHNICIAN+TARGET", what)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%s name is %d characters long; at most %d are allowed", what, len(s), maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%s name %q: character %q at position %d is not allowed (use a-z, 0-9, '.', '_', '-', starting with a letter or digit)",
				what, truncate(s, maxNameLen), rune(c), i+1)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
