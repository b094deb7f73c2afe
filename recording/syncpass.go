package recording

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The sync pass. A channel that writes less than a chunk a second (an
// interactive one) has its bytes chained by the node's sync pass: once
// every chunkInterval one goroutine makes a chunk of what each such
// channel wrote since its last one, hashes it, makes all of them durable
// with one sync of their file system (syncfs, where the system has it),
// writes their chain records, and makes those durable with one more. A
// thousand idle shells so cost two syncs a second, not a timer and two
// fsyncs each. A channel that fills a chunk makes it itself, at once, in
// the background (chainInBackgroundLocked); the pass leaves a file whose
// chunk is in flight to the next pass, so that each file's chunks are
// chained in order.

// passes is the node's sync pass.
var passes syncPass

type syncPass struct {
	mu      sync.Mutex
	dirty   []*Channel
	running bool // the pass's goroutine runs; it stops when nothing is dirty

	// perFile lists the recording directories where a syncfs reported a
	// writeback error: syncfs reports an error once per open file, so
	// the file that fails may not be the one it was asked through. From
	// then on every file there is fsynced itself (the pass's goroutine
	// alone uses it).
	perFile map[string]bool
}

// add has c's bytes chained by the next pass. The caller holds c.mu and
// has set c.dirty.
func (p *syncPass) add(c *Channel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirty = append(p.dirty, c)
	if !p.running {
		p.running = true
		go p.loop()
	}
}

func (p *syncPass) loop() {
	t := time.NewTicker(chunkInterval)
	defer t.Stop()
	for range t.C {
		p.mu.Lock()
		batch := p.dirty
		p.dirty = nil
		if len(batch) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.run(batch)
	}
}

// passChunk is one chunk of a pass.
type passChunk struct {
	c    *Channel
	fl   *file
	f    *os.File
	ck   chunk
	sum  []byte
	err  error
	done chan struct{}
}

// run chains the chunks of the channels in batch.
func (p *syncPass) run(batch []*Channel) {
	var cks []*passChunk
	for _, c := range batch {
		var busy bool
		if cks, busy = c.passChunks(cks); busy {
			// Its lock is held (a channel waiting for its own chunk's
			// sync, or closing): the others do not wait for it.
			p.add(c)
		}
	}
	if len(cks) == 0 {
		return
	}
	for _, pc := range cks {
		pc.sum, pc.err = hashChunk(pc.f, pc.ck)
	}
	// The bytes are durable before the records that name them.
	p.syncAll(cks, func(pc *passChunk) *os.File { return pc.f })
	chains := make([]*passChunk, 0, len(cks))
	seen := map[*Session]bool{}
	for _, pc := range cks {
		if pc.err != nil {
			continue
		}
		s := pc.c.sess
		s.chainMu.Lock()
		if pc.err = s.chainableLocked(); pc.err == nil {
			if _, pc.err = s.chain.write(pc.fl.name, pc.ck.off, pc.ck.n, pc.sum, false); pc.err != nil {
				s.chainErr = pc.err // a half-written line: nothing may follow it
			}
		}
		s.chainMu.Unlock()
		if pc.err == nil && !seen[s] {
			seen[s] = true
			chains = append(chains, pc)
		}
	}
	p.syncAll(chains, func(pc *passChunk) *os.File {
		pc.c.sess.chainMu.Lock()
		defer pc.c.sess.chainMu.Unlock()
		if pc.c.sess.chain.f == nil {
			// Sealed: cannot happen while a chunk of the session is in
			// flight (Close waits for it, End for every Close).
			return nil
		}
		return pc.c.sess.chain.f
	})
	for _, pc := range chains {
		if pc.err != nil {
			// The session's chain may not be durable: nothing more is
			// chained, and every channel of the session fails.
			s := pc.c.sess
			s.chainMu.Lock()
			if s.chainErr == nil {
				s.chainErr = pc.err
			}
			s.chainMu.Unlock()
		}
	}
	for _, pc := range cks {
		err := pc.err
		if err == nil {
			pc.c.sess.chainMu.Lock()
			err = pc.c.sess.chainErr
			pc.c.sess.chainMu.Unlock()
		}
		if err != nil {
			pc.fl.syncErr = err
			pc.c.sess.fail(err)
		}
		close(pc.done)
	}
}

// passChunks appends to cks a chunk of each of c's files that has bytes
// written since its last chunk and none in flight; a file with a chunk
// in flight waits for the next pass, and so do the events when the bytes
// they refer to do. busy says c's lock was held: nothing was taken.
func (c *Channel) passChunks(cks []*passChunk) (_ []*passChunk, busy bool) {
	if !c.mu.TryLock() {
		return cks, true
	}
	defer c.mu.Unlock()
	c.dirty = false
	if c.closed || c.err != nil {
		return cks, false // Close chains what is left; a failed channel takes no more
	}
	again := false
	for _, fl := range c.files() {
		if fl.off == fl.chunkOff {
			continue
		}
		if again || fl.busy() {
			// The data file first (files()): its events never go into
			// the chain before the bytes they refer to.
			again = true
			continue
		}
		if err := c.waitSyncLocked(fl); err != nil {
			return cks, false
		}
		pc := &passChunk{c: c, fl: fl, f: fl.f, ck: chunk{off: fl.chunkOff, n: fl.off - fl.chunkOff}, done: make(chan struct{})}
		fl.chunkOff = fl.off
		fl.syncing = pc.done
		cks = append(cks, pc)
	}
	if again {
		c.dirty = true
		passes.add(c)
	}
	return cks, false
}

// syncAll makes the files of cks durable: one sync of each file system
// they are on where the system can (all of a recording directory's
// sessions share one), else, or when that fails, an fsync of each file,
// which also tells which failed. A failure is set on its chunks.
func (p *syncPass) syncAll(cks []*passChunk, fileOf func(*passChunk) *os.File) {
	byRoot := map[string][]*passChunk{}
	var roots []string
	for _, pc := range cks {
		root := filepath.Dir(pc.c.sess.dir)
		if byRoot[root] == nil {
			roots = append(roots, root)
		}
		byRoot[root] = append(byRoot[root], pc)
	}
	for _, root := range roots {
		group := byRoot[root]
		var any *os.File
		for _, pc := range group {
			if f := fileOf(pc); f != nil {
				any = f
				break
			}
		}
		if any == nil {
			continue
		}
		if len(group) > 1 && syncfsReportsErrors && !p.perFile[root] {
			if syncFS(any) == nil {
				continue
			}
			if p.perFile == nil {
				p.perFile = map[string]bool{}
			}
			p.perFile[root] = true
		}
		for _, pc := range group {
			if f := fileOf(pc); f != nil {
				if err := f.Sync(); err != nil {
					pc.err = syncError(err)
				}
			}
		}
	}
}

func syncError(err error) error { return fmt.Errorf("recording sync: %w", err) }
