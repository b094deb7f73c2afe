//go:build !linux

package recording

import (
	"errors"
	"os"
)

// syncFS is syncfs(2) where the system has it; elsewhere the sync pass
// syncs file by file.
func syncFS(*os.File) error { return errors.ErrUnsupported }
