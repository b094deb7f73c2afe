package session

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// keepAlive asks the peer of conn to answer a keepalive@openssh.com
// request every interval, like OpenSSH's ClientAliveInterval and
// ServerAliveInterval. A peer that stops reading, or that stops
// answering in the middle of a key exchange (during which x/crypto holds
// back every other packet), leaves the requests unanswered; after
// countMax in a row, dead is called once with the reason. The returned
// stop ends the checks.
//
// It runs on a timer: no goroutine exists between checks, and one per
// request only while it waits for its answer. A request that cannot even
// be written waits until the connection closes; at most countMax+1 do.
func keepAlive(conn ssh.Conn, interval time.Duration, countMax int, dead func(why string)) (stop func()) {
	k := &keepalive{conn: conn, interval: interval, countMax: countMax, dead: dead}
	k.mu.Lock()
	k.timer = time.AfterFunc(interval, k.tick)
	k.mu.Unlock()
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.stopped = true
		k.timer.Stop()
	}
}

type keepalive struct {
	conn     ssh.Conn
	interval time.Duration
	countMax int
	dead     func(why string)

	mu          sync.Mutex
	timer       *time.Timer
	stopped     bool
	outstanding int // requests not answered yet
	missed      int // checks in a row that found a request unanswered
}

func (k *keepalive) tick() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	if k.outstanding > 0 {
		k.missed++
		if k.missed >= k.countMax {
			k.stopped = true
			k.mu.Unlock()
			k.dead(fmt.Sprintf("%d keepalives in a row unanswered, %s apart (ssh.keepalive_interval, ssh.keepalive_count_max)", k.missed, k.interval))
			return
		}
	}
	if k.outstanding <= k.countMax {
		k.outstanding++
		go k.ask()
	}
	k.timer.Reset(k.interval)
	k.mu.Unlock()
}

// ask sends one request. Any reply, even a refusal, shows that the peer
// reads and answers; an error means the connection closed.
func (k *keepalive) ask() {
	_, _, err := k.conn.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil {
		return
	}
	k.mu.Lock()
	k.outstanding--
	k.missed = 0
	k.mu.Unlock()
}
