package main

import (
	"errors"
	"net"
	"os"
	"strings"
)

// sdNotify tells the service manager about the service's state (the
// sd_notify protocol: one datagram to $NOTIFY_SOCKET), as Type=notify
// units expect: READY=1 once sekisho serves, RELOADING=1 and READY=1
// around a reload, STOPPING=1 when it stops. Without NOTIFY_SOCKET (not
// started by systemd) it does nothing.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(path, "@"):
		path = "\x00" + path[1:] // an abstract socket
	case !strings.HasPrefix(path, "/"):
		return errors.New("NOTIFY_SOCKET is neither a path nor an abstract socket")
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
