package session

import (
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// keepAlive asks the peer of conn to answer a keepalive@openssh.com
// request every interval, like OpenSSH's ClientAliveInterval and
// ServerAliveInterval. A peer that stops reading, or that stops
// answering in the middle of a key exchange (during which x/crypto holds
// back every other packet), leaves the requests unanswered; after
// countMax in a row, dead is called with the reason and keepAlive
// returns. It also returns when stop is closed.
//
// A request that cannot even be written blocks its own goroutine until
// the connection closes; at most countMax of them exist.
func keepAlive(conn ssh.Conn, interval time.Duration, countMax int, stop <-chan struct{}, dead func(why string)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	missed := 0
	answered := make(chan struct{}, countMax+1)
	outstanding := 0
	for {
		select {
		case <-stop:
			return
		case <-answered:
			outstanding--
			missed = 0
			continue
		case <-t.C:
		}
		if outstanding > 0 {
			missed++
			if missed >= countMax {
				dead(fmt.Sprintf("%d keepalives in a row unanswered, %s apart (ssh.keepalive_interval, ssh.keepalive_count_max)", missed, interval))
				return
			}
		}
		if outstanding > countMax {
			continue
		}
		outstanding++
		go func() {
			// Any reply, even a refusal, shows that the peer reads and
			// answers. An error means the connection closed.
			if _, _, err := conn.SendRequest("keepalive@openssh.com", true, nil); err == nil {
				answered <- struct{}{}
			}
		}()
	}
}
