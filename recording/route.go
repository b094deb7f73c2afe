package recording

import (
	"fmt"
	"slices"
	"strings"
)

// A Route is one recording store and the residency zones it keeps.
type Route struct {
	// Store names the store; empty for the spool that keeps the zones no
	// store names.
	Store string
	// Zones are residency country codes; "*" stands for every zone no
	// route names.
	Zones []string
	// S3 is the object store the recordings are streamed to; nil keeps
	// them in the local spool, on this host.
	S3 *S3Store
}

// Local reports whether the recordings routed here stay on this host.
func (r Route) Local() bool { return r.S3 == nil }

// Routes say which store keeps the recordings of each residency zone.
//
// A zone a route names is kept by that route's store, whether it is an
// object store or the local spool: "*" covers only the zones no route
// names. A store kept local for its zone ("JP stays on this host") is so
// whatever "*" is, and a recording never reaches another zone's store by
// falling through to it. A zone neither named nor covered stays in the
// spool.
type Routes struct {
	named map[string]Route // zone (upper case) -> its route
	other *Route           // the route of "*"; nil for none
}

// NewRoutes builds the routing table of routes. A zone named twice
// (or "*" twice) is an error: which store would keep it is not clear.
func NewRoutes(routes []Route) (*Routes, error) {
	rs := &Routes{named: map[string]Route{}}
	by := map[string]string{}
	for _, r := range routes {
		for _, z := range r.Zones {
			z = strings.ToUpper(z)
			if other, ok := by[z]; ok {
				return nil, fmt.Errorf("recording store %s: zone %s is already stored in %s", r.Store, z, other)
			}
			by[z] = r.Store
			if z == "*" {
				rs.other = &r
				continue
			}
			rs.named[z] = r
		}
	}
	return rs, nil
}

// For returns the route of zone's recordings: the route naming zone, else
// that of "*", else the spool's (no store).
func (rs *Routes) For(zone string) Route {
	if rs == nil {
		return Route{}
	}
	if r, ok := rs.named[strings.ToUpper(zone)]; ok {
		return r
	}
	if rs.other != nil {
		return *rs.other
	}
	return Route{}
}

// ObjectStores returns every object store a route names, once each, in
// the order of the routes' zones.
func (rs *Routes) ObjectStores() []*S3Store {
	if rs == nil {
		return nil
	}
	var out []*S3Store
	seen := map[*S3Store]bool{}
	add := func(r Route) {
		if r.S3 != nil && !seen[r.S3] {
			seen[r.S3] = true
			out = append(out, r.S3)
		}
	}
	for _, z := range rs.zones() {
		add(rs.named[z])
	}
	if rs.other != nil {
		add(*rs.other)
	}
	return out
}

func (rs *Routes) zones() []string {
	zs := make([]string, 0, len(rs.named))
	for z := range rs.named {
		zs = append(zs, z)
	}
	slices.Sort(zs)
	return zs
}
