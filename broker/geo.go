package broker

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Network is a named address range whose country the operator knows: an
// affiliate's office, a VPN egress range.
type Network struct {
	Name     string
	Country  string
	Prefixes []netip.Prefix
}

// Geo answers where a source address is. The configured networks answer
// first (longest prefix wins); a GeoIP database, when configured, answers
// for the rest.
type Geo struct {
	networks []*Network
	entries  []geoEntry        // sorted by prefix length, longest first
	db       *maxminddb.Reader // optional GeoIP database
}

type geoEntry struct {
	prefix  netip.Prefix
	network *Network
}

// NewGeo returns a Geo for the configured networks and, when db is not
// nil, a MaxMind-format country database for the other addresses.
func NewGeo(networks []*Network, db *maxminddb.Reader) *Geo {
	g := &Geo{db: db, networks: networks}
	for _, n := range networks {
		for _, p := range n.Prefixes {
			g.entries = append(g.entries, geoEntry{prefix: p.Masked(), network: n})
		}
	}
	sort.SliceStable(g.entries, func(i, j int) bool { return g.entries[i].prefix.Bits() > g.entries[j].prefix.Bits() })
	return g
}

// Networks returns the configured networks.
func (g *Geo) Networks() []*Network {
	if g == nil {
		return nil
	}
	return g.networks
}

// Locate returns the country and the configured network name of addr;
// both are empty when nothing knows the address.
func (g *Geo) Locate(addr netip.Addr) (country, network string) {
	if g == nil || !addr.IsValid() {
		return "", ""
	}
	addr = addr.Unmap()
	for _, e := range g.entries {
		if e.prefix.Contains(addr) {
			return e.network.Country, e.network.Name
		}
	}
	if g.db != nil {
		var rec struct {
			Country struct {
				ISOCode string `maxminddb:"iso_code"`
			} `maxminddb:"country"`
		}
		if err := g.db.Lookup(addr).Decode(&rec); err == nil {
			return rec.Country.ISOCode, ""
		}
	}
	return "", ""
}

// OpenGeoIP opens a MaxMind-format database (GeoIP2/GeoLite2 Country or
// City, or one of the operator's own) whose records carry country.iso_code.
func OpenGeoIP(path string) (*maxminddb.Reader, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("geoip database %s: %w", path, err)
	}
	return db, nil
}
