package broker

import (
	"bytes"
	"slices"

	"golang.org/x/crypto/ssh"
)

// Affiliate is a company (usually a contractor) whose technicians reach
// targets through sekisho. Country is an ISO 3166-1 alpha-2 code.
type Affiliate struct {
	Name    string
	Country string
}

// Technician is a person who connects through sekisho with plain OpenSSH.
type Technician struct {
	Name      string
	Affiliate Affiliate
	Groups    []string
	Keys      []ssh.PublicKey
	// RequireMFA asks this technician for a TOTP code on every session.
	RequireMFA bool
	// ReviewResidency limits what this person sees and acts on, as an
	// admin, approver or reviewer, to what concerns targets of these
	// residencies; nil means all of them. See Scope.
	ReviewResidency []string
}

// Scope returns the technician's scope, from review_residency.
func (t *Technician) Scope() Scope {
	return Scope{Residencies: slices.Clone(t.ReviewResidency)}
}

// HasKey reports whether key is one of the technician's registered keys.
// Certificates are never accepted as technician keys: a certificate names
// its own signer, and sekisho trusts only keys the operator registered.
func (t *Technician) HasKey(key ssh.PublicKey) bool {
	if _, isCert := key.(*ssh.Certificate); isCert {
		return false
	}
	wire := key.Marshal()
	for _, k := range t.Keys {
		if bytes.Equal(k.Marshal(), wire) {
			return true
		}
	}
	return false
}

// Target is a server behind sekisho.
type Target struct {
	Name string
	// Hostnames are further names the target answers to through
	// ProxyJump (ssh -J): the names technicians' tools know it by, such
	// as db-jp-01.db.example.
	Hostnames []string
	// Address is host:port of the target's sshd.
	Address string
	// Login is the account on the target; it becomes the certificate's only
	// principal unless a rule names another.
	Login string
	// Residency is the country code of the zone whose law governs the data
	// on the target.
	Residency string
	// Zone is the IANA time zone of the target ("Asia/Tokyo"); rules see
	// now in this zone. Empty means UTC.
	Zone string
	// Data lists the data classes held on the target, such as "pii".
	Data   []string
	Labels map[string]string
	// HostKeys are the pinned host keys; HostCAs are CA keys whose host
	// certificates are trusted for this target's name. At least one of the
	// two is set: sekisho never trusts a host key on first use.
	HostKeys []ssh.PublicKey
	HostCAs  []ssh.PublicKey
}

// Holds reports whether the target holds data of class c.
func (t *Target) Holds(c string) bool {
	for _, d := range t.Data {
		if d == c {
			return true
		}
	}
	return false
}
