package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/internal/peer"
	"github.com/sekisho/sekisho/recording"
	"github.com/sekisho/sekisho/session"
)

// Moderation across the cluster. A moderated session's seat is on the
// node that serves it; a moderator on another node (over SSH, or a
// console behind a balancer) is seated there over the node-to-node link:
// "moderate ID" streams the session while it holds the seat, and
// "moderation ID VERB" carries out one action (may, state, list, say,
// hold, release, end), which the serving node checks.

// moderateStream serves another node's moderator: seated while the
// stream lasts.
func (n *Node) moderateStream(ctx context.Context, req peer.WatchRequest, out *peer.Stream) error {
	m, err := n.srv.ModerateHere(req.Session, req.Watcher, "node "+req.Node)
	if err != nil {
		return peerRefusal(err)
	}
	defer m.Leave()
	if err := out.Resize(80, 24); err != nil {
		return err
	}
	return m.Watch(ctx, out, recording.WatchOptions{Resize: out.Resize})
}

// moderationControl carries out another node's moderator's action.
func (n *Node) moderationControl(ctx context.Context, req peer.ControlRequest) (string, error) {
	switch req.Verb {
	case "list":
		return answerJSON(n.srv.Moderated(req.Watcher))
	case "may", "state":
		ms, err := n.srv.MayModerate(req.Session, req.Watcher)
		if err != nil {
			return "", peerRefusal(err)
		}
		return answerJSON(ms)
	}
	m, err := n.srv.Seated(req.Session, req.Watcher, "node "+req.Node)
	if err != nil {
		return "", peerRefusal(err)
	}
	switch req.Verb {
	case "say":
		err = m.Say(req.Text)
	case "hold", "release":
		err = m.Hold(req.Verb == "hold")
	case "end":
		err = m.End(req.Text)
	default:
		return "", peer.Refusal(fmt.Sprintf("%q is not a moderator's action", req.Verb))
	}
	if err != nil {
		return "", peerRefusal(err)
	}
	return answerJSON(m.Session())
}

func answerJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// peerRefusal is err as the link says it: a session not here, or a
// refusal worded for the moderator.
func peerRefusal(err error) error {
	var rf *session.ModerationRefused
	switch {
	case !errors.As(err, &rf):
		return err
	case rf.NotHere:
		return fmt.Errorf("%w: %s", peer.ErrNotServed, rf.Why)
	}
	return peer.Refusal(rf.Why)
}

// moderationListTTL is how long a node's list of moderated sessions is
// reused: the console's overview asks for it every few seconds.
const moderationListTTL = 3 * time.Second

// moderationCache keeps the other nodes' lists, by node and moderator,
// and where each session was found.
type moderationCache struct {
	mu    sync.Mutex
	lists map[[2]string]cachedList
	where map[string]string // session ID: the address of its node
}

type cachedList struct {
	at       time.Time
	sessions []broker.ModeratedSession
}

// others returns the addresses of the other live nodes that take
// node-to-node connections.
func (p *Peers) others(ctx context.Context) []string {
	beats, err := p.nodes.Nodes(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, b := range beats {
		if b.Name == p.self || b.Address == "" || (p.lostAfter > 0 && b.Silent > p.lostAfter) {
			continue
		}
		out = append(out, b.Address)
	}
	return out
}

// locate finds the node that has session id waiting for moderators or
// moderated, and whether watcher may moderate it there.
func (p *Peers) locate(ctx context.Context, id, watcher string) (string, broker.ModeratedSession, error) {
	p.mod.mu.Lock()
	known := p.mod.where[id]
	p.mod.mu.Unlock()
	addrs := p.others(ctx)
	if known != "" {
		addrs = append([]string{known}, addrs...)
	}
	var failed error
	for _, addr := range addrs {
		ms, err := p.state(ctx, addr, id, watcher, "may")
		var rf *session.ModerationRefused
		switch {
		case errors.Is(err, peer.ErrNotServed):
			continue
		case err != nil && !errors.As(err, &rf):
			// A node stopping, upgrading or out of reach: the session
			// may be on another.
			failed = err
			continue
		}
		if err == nil {
			p.mod.mu.Lock()
			if p.mod.where == nil {
				p.mod.where = map[string]string{}
			}
			if len(p.mod.where) > 1000 {
				clear(p.mod.where)
			}
			p.mod.where[id] = addr
			p.mod.mu.Unlock()
		}
		return addr, ms, err
	}
	why := fmt.Sprintf("no session %s waiting for moderators or moderated on any node", id)
	if failed != nil {
		why += fmt.Sprintf(" that answered (%v)", failed)
	}
	return "", broker.ModeratedSession{}, &session.ModerationRefused{Why: why, NotHere: true}
}

// state asks the node at addr for session id as watcher may moderate it.
func (p *Peers) state(ctx context.Context, addr, id, watcher, verb string) (broker.ModeratedSession, error) {
	var ms broker.ModeratedSession
	answer, err := p.control(ctx, addr, peer.ControlRequest{Session: id, Verb: verb, Watcher: watcher})
	if err == nil {
		err = json.Unmarshal([]byte(answer), &ms)
	}
	return ms, err
}

// control sends req to the node at addr; a refusal comes back as a
// *session.ModerationRefused.
func (p *Peers) control(ctx context.Context, addr string, req peer.ControlRequest) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req.Node = p.self
	answer, err := peer.Control(ctx, addr, p.key, req)
	if errors.Is(err, peer.ErrRefused) {
		return "", &session.ModerationRefused{Why: err.Error()}
	}
	return answer, err
}

// Moderate implements session.Peers.
func (p *Peers) Moderate(ctx context.Context, id, watcher string) (session.Seat, error) {
	addr, _, err := p.locate(ctx, id, watcher)
	if err != nil {
		return nil, err
	}
	return &remoteSeat{p: p, addr: addr, id: id, watcher: watcher}, nil
}

// Seated implements session.Peers: the serving node checks each action.
func (p *Peers) Seated(ctx context.Context, id, watcher string) (session.Seat, error) {
	return p.Moderate(ctx, id, watcher)
}

// Moderated implements session.Peers.
func (p *Peers) Moderated(ctx context.Context, watcher string) []broker.ModeratedSession {
	var out []broker.ModeratedSession
	for _, addr := range p.others(ctx) {
		key := [2]string{addr, watcher}
		p.mod.mu.Lock()
		c, ok := p.mod.lists[key]
		p.mod.mu.Unlock()
		if !ok || time.Since(c.at) > moderationListTTL {
			c = cachedList{at: time.Now()}
			// A node that does not answer soon is left out of this round
			// rather than stall the console's pages.
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			answer, err := p.control(lctx, addr, peer.ControlRequest{Session: "-", Verb: "list", Watcher: watcher})
			cancel()
			if err == nil {
				json.Unmarshal([]byte(answer), &c.sessions)
			}
			p.mod.mu.Lock()
			if p.mod.lists == nil || len(p.mod.lists) > 1000 {
				p.mod.lists = map[[2]string]cachedList{}
			}
			p.mod.lists[key] = c
			p.mod.mu.Unlock()
		}
		out = append(out, c.sessions...)
	}
	return out
}

// remoteSeat is a moderator's seat at a session another node serves.
type remoteSeat struct {
	p       *Peers
	addr    string
	id      string
	watcher string
}

func (s *remoteSeat) Session() broker.ModeratedSession {
	ms, err := s.p.state(context.Background(), s.addr, s.id, s.watcher, "state")
	if err != nil {
		return broker.ModeratedSession{ID: s.id}
	}
	return ms
}

func (s *remoteSeat) act(verb, text string) error {
	_, err := s.p.control(context.Background(), s.addr, peer.ControlRequest{Session: s.id, Verb: verb, Text: text, Watcher: s.watcher})
	return err
}

func (s *remoteSeat) Say(text string) error { return s.act("say", text) }

func (s *remoteSeat) Hold(hold bool) error {
	if hold {
		return s.act("hold", "")
	}
	return s.act("release", "")
}

func (s *remoteSeat) End(reason string) error { return s.act("end", reason) }

// Watch takes the seat on the serving node and streams the session.
func (s *remoteSeat) Watch(ctx context.Context, w io.Writer, opt recording.WatchOptions) error {
	err := peer.Watch(ctx, s.addr, s.p.key, peer.WatchRequest{Session: s.id, Node: s.p.self, Watcher: s.watcher, Moderate: true}, w, opt.Resize)
	if errors.Is(err, peer.ErrRefused) {
		return &session.ModerationRefused{Why: err.Error()}
	}
	return err
}

// Leave: the seat is left when Watch's stream ends.
func (s *remoteSeat) Leave() {}
