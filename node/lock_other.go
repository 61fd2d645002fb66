//go:build !unix

package node

import (
	"errors"
	"os"
)

// errLocked reports a lock another process holds.
var errLocked = errors.New("locked")

// tryLock does not lock on this platform: two nodes on one data directory
// are not detected here (the Raft store then refuses or corrupts). Linux,
// the BSDs and macOS lock.
func tryLock(*os.File) error { return nil }

func unlock(*os.File) error { return nil }
