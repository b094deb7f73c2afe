//go:build !linux

package recording

import (
	"errors"
	"os"
)

// syncfs(2) is Linux's; elsewhere the sync pass syncs file by file.
const syncfsReportsErrors = false

var syncFS = func(*os.File) error { return errors.ErrUnsupported }
