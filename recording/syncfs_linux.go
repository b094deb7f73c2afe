package recording

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// syncfsReportsErrors says whether syncfs(2) reports writeback errors,
// which it does since Linux 5.8; before, it could succeed over data that
// never reached the disk, and the sync pass fsyncs file by file.
var syncfsReportsErrors = kernelAtLeast(5, 8)

// syncFS makes everything written to the file system f is on durable,
// with one call; it reports a writeback error of the file system that
// f's descriptor has not seen. A variable for the tests' faults.
var syncFS = syncfs

func syncfs(f *os.File) error {
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

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return releaseAtLeast(unix.ByteSliceToString(u.Release[:]), major, minor)
}

// releaseAtLeast compares a kernel release ("6.18.44-fc", "5.4.0-150")
// with major.minor.
func releaseAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}
