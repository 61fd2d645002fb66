package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// lockFile, in DataDir, is held (an exclusive advisory lock) by the node
// that uses the directory, and names it.
const lockFile = "LOCK"

// lockWait bounds how long Start waits for another process to release the
// data directory: long enough for a node being restarted to finish its
// shutdown, short enough that a second node on the same directory fails
// at once with a message naming the first.
const lockWait = 5 * time.Second

// lockPoll is how often a waiting Start tries the lock again.
const lockPoll = 100 * time.Millisecond

// holder is what the lock file says about the process that holds it.
type holder struct {
	PID     int       `json:"pid"`
	Node    string    `json:"node"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
}

func (h holder) String() string {
	return fmt.Sprintf("pid %d (node %s on %s, since %s)", h.PID, h.Node, h.Host, h.Started.Format(time.RFC3339))
}

// dirLock is a held data directory lock.
type dirLock struct {
	f *os.File
}

// lockDataDir takes the data directory's lock for node id, creating the
// directory if needed. While another process holds it, it retries until
// lockWait has passed or ctx ends, then fails with ErrDataDirLocked naming
// the holder. The lock is released by release, or by the kernel when the
// process ends (a kill -9 leaves nothing to clean up).
func lockDataDir(ctx context.Context, dir, id string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("quotamesh/node: data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/node: data directory lock %s: %w", path, err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err := tryLock(f)
		if err == nil {
			break
		}
		if !errors.Is(err, errLocked) {
			_ = f.Close()
			return nil, fmt.Errorf("quotamesh/node: data directory lock %s: %w", path, err)
		}
		if ctx.Err() != nil {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s is in use by %s; start-up interrupted while waiting for it: %w", ErrDataDirLocked, dir, readHolder(path), ctx.Err())
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s is in use by %s (still held after %v): another node runs on this data directory; stop it, or give this node its own --data-dir",
				ErrDataDirLocked, dir, readHolder(path), lockWait)
		}
		select {
		case <-ctx.Done():
		case <-time.After(lockPoll):
		}
	}
	host, _ := os.Hostname()
	b, _ := json.Marshal(holder{PID: os.Getpid(), Node: id, Host: host, Started: time.Now().UTC()})
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt(append(b, '\n'), 0)
	}
	return &dirLock{f: f}, nil
}

// readHolder describes the lock file's holder as well as it can.
func readHolder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "another process"
	}
	var h holder
	if json.Unmarshal(b, &h) != nil || h.PID == 0 {
		return fmt.Sprintf("another process (%s says %q)", path, strings.TrimSpace(clip(string(b))))
	}
	return h.String()
}

// release unlocks and closes the lock file; it leaves the file (and its
// stale contents) in place, as the next holder overwrites them.
func (l *dirLock) release() {
	if l == nil || l.f == nil {
		return
	}
	_ = unlock(l.f)
	_ = l.f.Close()
	l.f = nil
}
