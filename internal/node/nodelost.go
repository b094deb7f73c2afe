package node

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// Lost nodes. A node silent for longer than cluster.node_lost_after is
// lost: one survivor at a time (under the job's advisory lock) claims its
// live sessions in one statement that ends them in the register as "node
// lost", so that each is claimed once however many survivors look, and a
// node that beats again first keeps them. Each claimed session's
// recording is then sealed as incomplete from the chunks that reached its
// zone's object store, signed with the shared recording key, stored back
// there and registered. A seal that fails is tried again at the next
// sweep, by whichever survivor holds the lock. A recording kept in a
// zone's local spool never left the lost node: it is sealed by that node
// when it starts again. A session that had ended on the lost node but
// whose recording it had not shipped whole is sealed the same way, once
// the node is lost; where the register holds that node's own seal, it
// stays, so that verify reports the store's recording as cut short.
//
// The lost node, when it starts again under the same name, leaves alone
// what a survivor took over: the spool copies of recordings sealed (or to
// be sealed) from the object store are set aside under superseded/, out of
// its recovery, its uploads and sekisho verify's way.

// supersededDir holds, under the recordings directory, the spool copies
// of recordings a survivor sealed from the object store.
const supersededDir = "superseded"

// lostNodeJob is what the recovery of lost nodes' sessions needs.
type lostNodeJob struct {
	lostAfter time.Duration
	routes    *recording.Routes
	key       ed25519.PrivateKey
	lastSweep time.Time // of the sessions whose seal is still to be made
	// swept holds, by lost node, the heartbeat after which every one of
	// its ended sessions was found whole in its store, or sealed there.
	swept map[string]time.Time
}

// storeHolds reports whether st holds seal as the seal of its recording.
func storeHolds(ctx context.Context, st *recording.S3Store, seal recording.Seal) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	there, err := st.StoredSeal(ctx, seal.Session)
	return err == nil && there == seal
}

// lostReason is the reason in the seal of a lost node's recording: the
// same from every survivor, so that a seal tried twice is the same.
func lostReason(node string) string {
	return fmt.Sprintf("%s: node %s stopped beating", broker.EndNodeLost, node)
}

// watchLostNodes looks for lost nodes every interval until ctx ends.
func (n *Node) watchLostNodes(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		jctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := n.store.RunJob(jctx, "node-lost", 0, n.recoverLostNodes)
		cancel()
		if err != nil && ctx.Err() == nil {
			n.log.Error("sessions of lost nodes not all recovered; tried again shortly", "err", err)
		}
	}
}

// recoverLostNodes claims the live sessions of lost nodes and seals their
// recordings, and seals those a claim left unsealed before.
func (n *Node) recoverLostNodes(ctx context.Context) error {
	j := &n.lost
	claimed, err := n.store.ClaimLostSessions(ctx, j.lostAfter, broker.EndNodeLost)
	if err != nil {
		return err
	}
	for _, r := range claimed {
		where := "its recording is sealed from what reached recording store " + j.routes.For(r.Residency).Store
		if j.routes.For(r.Residency).S3 == nil {
			where = "its recording never left that node's spool: it is sealed when that node starts again"
		}
		n.brk.Audit(ctx, broker.AuditEvent{Kind: broker.EventSessionNodeLost, Technician: r.Technician, Target: r.Target, Source: r.Source, Session: r.ID,
			Detail: broker.JSONDetail(struct {
				Node      string `json:"node"`
				LostAfter string `json:"lost_after"`
				By        string `json:"by"`
				Recording string `json:"recording"`
			}{r.Node, j.lostAfter.String(), n.name, where})})
		n.log.Warn("session of a lost node ended", "session", r.ID, "node", r.Node, "technician", r.Technician, "target", r.Target)
	}
	if len(claimed) == 0 && time.Since(j.lastSweep) < time.Minute {
		return nil
	}
	j.lastSweep = time.Now()
	ended, err := n.store.Sessions(ctx, broker.SessionFilter{EndReason: broker.EndNodeLost})
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range ended {
		if r.EndReason != broker.EndNodeLost || r.RecordingHead != "" || j.routes.For(r.Residency).S3 == nil {
			continue
		}
		if err := n.sealLost(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("session %s: %w", r.ID, err))
		}
	}
	errs = append(errs, n.sealUnshipped(ctx)...)
	return errors.Join(errs...)
}

// sealUnshipped seals, from their object store, the recordings of
// sessions that ended on a lost node before it had shipped them whole:
// the session was not live, so no claim took it, and the store holds
// chunks and live objects but no seal, or a seal without the rest. The
// register's seal is replaced only where it has none: one that differs
// from the store's stays, so that verify fails on the difference, and the
// difference is audited (recording.unshipped).
func (n *Node) sealUnshipped(ctx context.Context) []error {
	j := &n.lost
	nodes, err := n.store.Nodes(ctx)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, nb := range nodes {
		if nb.Name == n.name || nb.Silent <= j.lostAfter || j.swept[nb.Name].Equal(nb.Heartbeat) {
			continue
		}
		sessions, err := n.store.Sessions(ctx, broker.SessionFilter{Node: nb.Name})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		failed := false
		for _, r := range sessions {
			st := j.routes.For(r.Residency).S3
			if !r.Ended() || r.EndReason == broker.EndNodeLost || st == nil {
				continue
			}
			err := n.sealEnded(ctx, st, r)
			if err != nil {
				errs = append(errs, fmt.Errorf("session %s: %w", r.ID, err))
				failed = true
			}
		}
		if !failed {
			if j.swept == nil {
				j.swept = map[string]time.Time{}
			}
			j.swept[nb.Name] = nb.Heartbeat
		}
	}
	return errs
}

// unshippedReason is the reason in the seal of the recording of a session
// that ended on a lost node before it was shipped.
func unshippedReason(node string) string {
	return fmt.Sprintf("%s: node %s stopped beating before it shipped the recording of the ended session", broker.EndNodeLost, node)
}

// sealEnded seals the recording of r, a session that ended on a lost node,
// from st if st holds it unfinished.
func (n *Node) sealEnded(ctx context.Context, st *recording.S3Store, r broker.SessionRecord) error {
	unfinished, err := st.Unfinished(ctx, r.ID)
	if err != nil || !unfinished {
		return err
	}
	seal, err := n.sealFromStore(ctx, st, r, unshippedReason(r.Node))
	if err != nil {
		return err
	}
	switch {
	case r.RecordingHead == "":
		err = n.brk.RecordingSealed(ctx, broker.RecordingSeal{Session: r.ID, Complete: seal.Complete, Reason: seal.Reason, Chunks: seal.Chunks,
			Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature, Technician: r.Technician, Target: r.Target})
		if err != nil {
			return err
		}
	case recording.RegisterHead(seal.Head) != r.RecordingHead || seal.Chunks != r.RecordingChunks || seal.Complete != r.RecordingComplete:
		n.brk.Audit(ctx, broker.AuditEvent{Kind: broker.EventRecordingUnshipped, Technician: r.Technician, Target: r.Target, Session: r.ID,
			Detail: broker.JSONDetail(struct {
				Node             string `json:"node"`
				By               string `json:"by"`
				Store            string `json:"store"`
				Reason           string `json:"reason"`
				Complete         bool   `json:"complete"`
				Chunks           int    `json:"chunks"`
				Head             string `json:"head"`
				RegisteredHead   string `json:"registered_head"`
				RegisteredChunks int    `json:"registered_chunks"`
				RegisteredDone   bool   `json:"registered_complete"`
			}{r.Node, n.name, st.Name(), seal.Reason, seal.Complete, seal.Chunks, seal.Head, r.RecordingHead, r.RecordingChunks, r.RecordingComplete})})
	}
	n.log.Warn("recording of a session that ended on a lost node before it was shipped sealed from its store", "session", r.ID, "node", r.Node,
		"store", st.Name(), "chunks", seal.Chunks, "complete", seal.Complete, "registered_chunks", r.RecordingChunks)
	return nil
}

// sealLost seals the recording of a lost node's session from its object
// store, and registers the seal.
func (n *Node) sealLost(ctx context.Context, r broker.SessionRecord) error {
	st := n.lost.routes.For(r.Residency).S3
	seal, err := n.sealFromStore(ctx, st, r, lostReason(r.Node))
	if err != nil {
		return err
	}
	err = n.brk.RecordingSealed(ctx, broker.RecordingSeal{Session: r.ID, Complete: seal.Complete, Reason: seal.Reason, Chunks: seal.Chunks,
		Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature, Technician: r.Technician, Target: r.Target})
	if err != nil {
		return err
	}
	n.log.Warn("recording of a lost node's session sealed from its store", "session", r.ID, "node", r.Node, "store", st.Name(),
		"chunks", seal.Chunks, "complete", seal.Complete)
	return nil
}

// sealFromStore seals the recording of r from what reached st
// (recording.S3Store.SealShipped), or returns the seal st holds.
func (n *Node) sealFromStore(ctx context.Context, st *recording.S3Store, r broker.SessionRecord, reason string) (recording.Seal, error) {
	work, err := os.MkdirTemp("", "sekisho-lost-")
	if err != nil {
		return recording.Seal{}, err
	}
	defer os.RemoveAll(work)
	meta := recording.Meta{ID: r.ID, Technician: r.Technician, Affiliate: r.Affiliate, AffiliateCountry: r.AffiliateCountry,
		Source: r.Source, SourceCountry: r.SourceCountry, Target: r.Target, TargetAddress: r.TargetAddress, Residency: r.Residency,
		Login: r.Login, CrossBorder: r.CrossBorder, Rule: r.Rule, CertSerial: r.CertSerial, CertKeyID: r.CertKeyID, Start: r.StartedAt.UTC()}
	if json.Valid([]byte(r.Trace)) {
		meta.Trace = json.RawMessage(r.Trace)
	}
	return st.SealShipped(ctx, meta, work, n.lost.key, reason)
}

// setAsideSuperseded moves out of the spool the recordings of this
// node's sessions that a survivor ended as "node lost" and seals (or
// sealed) from their object store, before the node recovers its spool:
// the store's recording is the one of record. A spool copy whose seal is
// the one registered stays, and so does one whose seal, none registered,
// is the one in the store. What is set aside is kept, not deleted: it
// may hold bytes that never reached the store.
func setAsideSuperseded(ctx context.Context, store broker.Store, recDir string, routes *recording.Routes, logger *slog.Logger) {
	ents, err := os.ReadDir(recDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		dir, err := recording.SessionDir(recDir, e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		r, err := store.Session(ctx, e.Name())
		if err != nil || r.EndReason != broker.EndNodeLost || routes.For(r.Residency).S3 == nil {
			continue
		}
		seal, err := recording.ReadSeal(recDir, r.ID)
		if err == nil && r.RecordingHead != "" && recording.RegisterHead(seal.Head) == r.RecordingHead {
			continue
		}
		if err == nil && r.RecordingHead == "" && storeHolds(ctx, routes.For(r.Residency).S3, seal) {
			// This node sealed it and shipped the seal, and was killed
			// before the rest: the upload resumes and finishes it.
			logger.Warn("another node took this node for lost, but the store holds this node's seal of the session's recording: the spool copy stays and its upload resumes", "session", r.ID)
			continue
		}
		aside := filepath.Join(recDir, supersededDir)
		if err := os.MkdirAll(aside, 0o700); err != nil {
			logger.Error("spool copy of a recording another node took over not set aside", "session", r.ID, "err", err)
			continue
		}
		if err := os.Rename(dir, filepath.Join(aside, r.ID)); err != nil {
			logger.Error("spool copy of a recording another node took over not set aside", "session", r.ID, "err", err)
			continue
		}
		logger.Warn("another node took this node for lost and sealed this session's recording from its store; the spool copy, which may hold bytes that never reached the store, is set aside",
			"session", r.ID, "path", filepath.Join(aside, r.ID))
	}
}
