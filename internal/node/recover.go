package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/sekisho/sekisho/broker"
	"github.com/sekisho/sekisho/recording"
)

// recoverSessions ends, in the register, the sessions whose recordings
// were sealed after a crash, and audits each.
func recoverSessions(ctx context.Context, brk *broker.Broker, store broker.Store, seals []recording.Seal, logger *slog.Logger) {
	const reason = "server stopped: the session was cut off (crash or kill); its recording is sealed incomplete"
	for _, seal := range seals {
		id := seal.Session
		r, err := store.Session(ctx, id)
		if err == nil && !r.Ended() {
			if err := brk.SessionEnded(ctx, id, broker.SessionEnd{At: time.Now(), BytesIn: r.BytesIn, BytesOut: r.BytesOut, Reason: reason}); err != nil {
				logger.Error("crashed session not ended in the register", "session", id, "err", err)
			}
		}
		brk.Audit(ctx, broker.AuditEvent{Kind: broker.EventRecordingRecovered, Session: id, Detail: reason})
		err = brk.RecordingSealed(ctx, broker.RecordingSeal{Session: id, Complete: false, Reason: seal.Reason, Chunks: seal.Chunks,
			Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature})
		if err != nil && !errors.Is(err, broker.ErrNotFound) {
			logger.Error("recovered seal not registered", "session", id, "err", err)
		}
		logger.Warn("recording of a session cut off by a crash sealed as incomplete", "session", id)
	}
}

// finishRegistrations ends, in the register, the sessions whose
// recordings on this node were sealed but whose end was never registered:
// the node was killed between sealing a recording and registering the
// session's end (or its seal). Nothing is live on a node that is only
// starting, and a recording directory belongs to one node.
func finishRegistrations(ctx context.Context, brk *broker.Broker, store broker.Store, recDir string, logger *slog.Logger) {
	live, err := store.Sessions(ctx, broker.SessionFilter{Live: true})
	if err != nil {
		logger.Error("sessions left live by a crash not checked", "err", err)
		return
	}
	for _, r := range live {
		seal, err := recording.ReadSeal(recDir, r.ID)
		if err != nil {
			continue // not this node's, or recovered above
		}
		end := broker.SessionEnd{At: time.Now(), BytesIn: r.BytesIn, BytesOut: r.BytesOut,
			Reason: "server stopped after the session ended, before registering its end"}
		if m, err := recording.ReadMeta(recDir, r.ID); err == nil && !m.End.IsZero() {
			end.At, end.BytesIn, end.BytesOut = m.End, m.BytesIn, m.BytesOut
			if m.EndReason != "" {
				end.Reason = m.EndReason
			}
		}
		if err := brk.SessionEnded(ctx, r.ID, end); err != nil {
			logger.Error("sealed session not ended in the register", "session", r.ID, "err", err)
			continue
		}
		if r.RecordingHead == "" {
			err = brk.RecordingSealed(ctx, broker.RecordingSeal{Session: r.ID, Complete: seal.Complete, Reason: seal.Reason, Chunks: seal.Chunks,
				Head: seal.Head, MetaSHA256: seal.MetaSHA256, Key: seal.Key, Signature: seal.Signature})
			if err != nil {
				logger.Error("seal not registered", "session", r.ID, "err", err)
			}
		}
		logger.Warn("session whose end a crash kept from the register ended from its sealed recording", "session", r.ID, "reason", end.Reason)
	}
}
