package recording

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes everything written to the file system f is on durable, with
// one call (syncfs(2)); since Linux 5.8 it reports a writeback error of
// the file system that f's descriptor has not seen.
func syncFS(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	return serr
}
