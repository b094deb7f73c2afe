package session

import "fmt"

// stillAllowed decides a live session again: the broker's rules, locks
// and grants must still let it go on, and its recording must still belong
// in the store it is written to. When the answer is no, the reason is
// what the technician is told as the session ends.
func (c *conn) stillAllowed() (bool, string) {
	if ok, why := c.srv.cfg.Broker.StillAllowed(c.id.tech.Name, c.id.target.Name, c.source, c.id.key, c.id.decision); !ok {
		return false, why
	}
	if why := c.storeMoved(); why != "" {
		return false, why
	}
	return true, ""
}

// storeMoved says why the session cannot go on when its target's
// residency changed (a reload) so that the target's recordings now belong
// in another store than the one this session's recording goes to; ""
// when they do not. A recording keeps the store it started with (its
// chunks are already there), so the session ends rather than let the
// zone's data go on to a store outside it.
func (c *conn) storeMoved() string {
	u := c.srv.cfg.Uploader
	if u == nil {
		return ""
	}
	tg, ok := c.srv.cfg.Broker.Target(c.id.target.Name)
	if !ok || tg.Residency == c.id.target.Residency {
		return "" // a target gone is the broker's to end
	}
	was, now := u.Route(c.id.target.Residency), u.Route(tg.Residency)
	if was.Store == now.Store {
		return ""
	}
	return fmt.Sprintf("%s is now resident in %s, whose recordings are kept in %s, not in %s where this session is recorded; connect again",
		tg.Name, tg.Residency, storeName(now.Store), storeName(was.Store))
}

func storeName(s string) string {
	if s == "" {
		return "the local spool"
	}
	return "store " + s
}
