package node

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sekisho/sekisho/recording"
)

// RecordingRoutes builds the routing table of the recording stores,
// reading the object stores' keys: every store, local or not, keeps the
// zones it names.
func (c *Config) RecordingRoutes() (*recording.Routes, error) {
	stores := map[string]*recording.S3Store{}
	for _, st := range c.RecordingStores {
		if st.S3 == nil {
			continue
		}
		key := func(path string) (string, error) {
			b, err := os.ReadFile(c.Path(path))
			if err != nil {
				return "", fmt.Errorf("recording store %s: %w", st.Name, err)
			}
			return strings.TrimSpace(string(b)), nil
		}
		ak, err := key(st.S3.AccessKeyFile)
		if err != nil {
			return nil, err
		}
		sk, err := key(st.S3.SecretKeyFile)
		if err != nil {
			return nil, err
		}
		s3, err := recording.NewS3Store(recording.S3Config{Name: st.Name, Endpoint: st.S3.Endpoint, Bucket: st.S3.Bucket,
			Region: st.S3.Region, AccessKey: ak, SecretKey: sk, Insecure: st.S3.Insecure, KeepLocal: st.S3.KeepLocal,
			StallTimeout: time.Duration(st.S3.StallTimeout)})
		if err != nil {
			return nil, err
		}
		stores[st.Name] = s3
	}
	return c.routes(stores)
}

// routes is the routing table of the recording stores with the object
// stores given by name (none: the table says which store, not how to
// reach it).
func (c *Config) routes(objects map[string]*recording.S3Store) (*recording.Routes, error) {
	var rs []recording.Route
	for _, st := range c.RecordingStores {
		rs = append(rs, recording.Route{Store: st.Name, Zones: st.Residency, S3: objects[st.Name]})
	}
	return recording.NewRoutes(rs)
}

// checkStoreTransport refuses an object store reached over plain HTTP
// off loopback, unless the entry says the network is trusted for it: the
// recordings would cross that network in the clear.
func (c *Config) checkStoreTransport(st RecordingStoreEntry) error {
	s3 := st.S3
	if s3 == nil {
		return nil
	}
	if s3.PlainHTTPOffLoopback && !s3.Insecure {
		return c.errf(st.line, "recording store %s: s3.plain_http_off_loopback without insecure: true means nothing; remove it", st.Name)
	}
	if !s3.Insecure || s3.PlainHTTPOffLoopback || loopbackEndpoint(s3.Endpoint) {
		return nil
	}
	return c.errf(st.line, "recording store %s: s3.endpoint %s is not on loopback, and insecure: true would send its recordings across the network "+
		"unencrypted; give the store TLS and remove insecure, or, where that network is trusted with them, set plain_http_off_loopback: true",
		st.Name, s3.Endpoint)
}

// loopbackEndpoint reports whether host:port names this host: a loopback
// address or localhost. Other names are not resolved: what they resolve
// to may change.
func loopbackEndpoint(endpoint string) bool {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		host = endpoint
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// WriteStoreTable writes which store keeps the recordings of each
// residency the targets have, and where that store is.
func (c *Config) WriteStoreTable(w io.Writer) error {
	rs, err := c.routes(nil)
	if err != nil {
		return err
	}
	entries := map[string]RecordingStoreEntry{}
	for _, st := range c.RecordingStores {
		entries[st.Name] = st
	}
	var zones []string
	for _, t := range c.Targets {
		if !slices.Contains(zones, t.Residency) {
			zones = append(zones, t.Residency)
		}
	}
	slices.Sort(zones)
	var local []string // zones kept on this node's disk only
	fmt.Fprintln(w, "recordings by residency:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  RESIDENCY\tSTORE\tKEPT IN")
	for _, z := range zones {
		r := rs.For(z)
		st, ok := entries[r.Store]
		store, where := r.Store, "local spool "+c.Path(c.Recordings)
		switch {
		case !ok:
			store, where = "-", where+" (no store names "+z+")"
		case st.S3 != nil:
			where = fmt.Sprintf("s3 bucket %s at %s", st.S3.Bucket, st.S3.Endpoint)
			if st.S3.Insecure {
				where += " (plain http)"
			}
		}
		if ok && !slices.ContainsFunc(st.Residency, func(s string) bool { return strings.EqualFold(s, z) }) {
			store += ` (as "*")`
		}
		if !ok || st.S3 == nil {
			local = append(local, z)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", z, store, where)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if c.Postgres() && len(local) > 0 {
		// Several nodes share the register, not their disks.
		_, err = fmt.Fprintf(w, "warning: with the state on PostgreSQL, the recordings of %s stay on the disk of the node that made them: other nodes list those sessions but cannot replay, verify or watch them, and a lost node takes them with it; give those zones an s3 store\n",
			strings.Join(local, ", "))
	}
	return err
}
