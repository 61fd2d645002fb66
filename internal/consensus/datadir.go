package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// identityFile, in DataDir, records which node of which cluster the Raft
// state in the directory belongs to.
const identityFile = "identity.json"

// identity is the content of identityFile.
type identity struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// checkIdentity makes sure DataDir belongs to this node of this cluster. It
// writes the identity file when the directory has none: on the first start,
// and on the first start of this version on a directory written by an older
// one (hasState), which is adopted as this node's.
//
// Without this check a node given another node's directory, or a directory
// of another cluster whose members have the same IDs (n1, n2, ...), would
// start with that Raft state: its term and log could win elections here and
// replace this cluster's committed limit table with the other's.
func checkIdentity(cfg Config, hasState bool) (adopted bool, err error) {
	path := filepath.Join(cfg.DataDir, identityFile)
	want := identity{NodeID: cfg.NodeID, ClusterID: cfg.ClusterID}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := writeIdentity(path, want); err != nil {
			return false, err
		}
		return hasState, nil
	case err != nil:
		return false, fmt.Errorf("%w: reading %s: %w", ErrDataDir, path, err)
	}
	var got identity
	if err := json.Unmarshal(b, &got); err != nil || got.NodeID == "" {
		if err == nil {
			err = errors.New("no node_id")
		}
		return false, fmt.Errorf("%w: %s is not a QuotaMesh identity file (%v); it should say which node of which cluster the Raft state in %s belongs to",
			ErrDataDir, path, err, cfg.DataDir)
	}
	if got.ClusterID != want.ClusterID {
		return false, fmt.Errorf("%w: %s holds the Raft state of cluster %q (node %q), and this node is %q of cluster %q: give this node its own DataDir",
			ErrDataDir, cfg.DataDir, clip(got.ClusterID), clip(got.NodeID), cfg.NodeID, cfg.ClusterID)
	}
	if got.NodeID != want.NodeID {
		return false, fmt.Errorf("%w: %s holds the Raft state of node %q, and this node is %q: a node must keep its ID and its DataDir together",
			ErrDataDir, cfg.DataDir, clip(got.NodeID), cfg.NodeID)
	}
	return false, nil
}

// writeIdentity writes the identity file durably: to a temporary file that
// is synced, renamed into place, and the directory synced.
func writeIdentity(path string, id identity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return fmt.Errorf("quotamesh/consensus: encoding %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: writing %s: %w", ErrDataDir, tmp, err)
	}
	_, err = f.Write(append(b, '\n'))
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%w: writing %s: %w", ErrDataDir, path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// checkState reads back everything hashicorp/raft will read when it starts
// from DataDir, and reports what it cannot use as an error wrapping
// ErrDataDir that names the path. raft.NewRaft panics, instead of returning
// an error, on a log entry it cannot read (that is how raft-wal v0.4.0's
// truncation bug, raft-wal#31, showed), and a log that does not reach back to
// a usable snapshot makes it panic later, on its state machine goroutine;
// this check turns both into an error from Open.
//
// It reads the newest snapshot that raft's FileSnapshotStore opens (checking
// its CRC) and this package decodes (raft falls back to older ones the same
// way), then every log entry: each must be readable, carry its own index,
// and have a term no lower than the one before it and no higher than the
// current term; and the log must start no later than just after that
// snapshot.
func checkState(dataDir string, w *wal.WAL, snaps raft.SnapshotStore) error {
	walDir := filepath.Join(dataDir, "wal")
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("%w: listing snapshots in %s: %w", ErrDataDir, dataDir, err)
	}
	var snapIndex uint64
	var bad []string
	usable := false
	for _, m := range metas {
		if err := readSnapshot(snaps, m.ID); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", m.ID, err))
			continue
		}
		snapIndex, usable = m.Index, true
		break
	}
	if len(metas) > 0 && !usable {
		return fmt.Errorf("%w: no snapshot in %s can be read (%s)", ErrDataDir, filepath.Join(dataDir, "snapshots"), strings.Join(bad, "; "))
	}

	first, err := w.FirstIndex()
	if err != nil {
		return fmt.Errorf("%w: reading the first index of the Raft log in %s: %w", ErrDataDir, walDir, err)
	}
	last, err := w.LastIndex()
	if err != nil {
		return fmt.Errorf("%w: reading the last index of the Raft log in %s: %w", ErrDataDir, walDir, err)
	}
	term, err := w.GetUint64([]byte("CurrentTerm")) // raft's keyCurrentTerm
	if err != nil && !errors.Is(err, wal.ErrNotFound) {
		return fmt.Errorf("%w: reading the current term from %s: %w", ErrDataDir, walDir, err)
	}
	if last == 0 {
		return nil
	}
	if first > snapIndex+1 {
		what := "there is no snapshot"
		if usable {
			what = fmt.Sprintf("the newest readable snapshot ends at index %d", snapIndex)
		}
		if len(bad) > 0 {
			what += " (unreadable: " + strings.Join(bad, "; ") + ")"
		}
		return fmt.Errorf("%w: the Raft log in %s starts at index %d but %s: entries %d to %d are missing",
			ErrDataDir, walDir, first, what, snapIndex+1, first-1)
	}
	var prev uint64
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			return fmt.Errorf("%w: entry %d of the Raft log in %s (entries %d to %d) cannot be read: %w", ErrDataDir, i, walDir, first, last, err)
		}
		switch {
		case l.Index != i:
			return fmt.Errorf("%w: the Raft log in %s holds index %d where index %d belongs", ErrDataDir, walDir, l.Index, i)
		case l.Term < prev:
			return fmt.Errorf("%w: the Raft log in %s goes back from term %d to term %d at index %d", ErrDataDir, walDir, prev, l.Term, i)
		case l.Term > term:
			return fmt.Errorf("%w: entry %d of the Raft log in %s has term %d, above the current term %d in its stable store", ErrDataDir, i, walDir, l.Term, term)
		}
		prev = l.Term
	}
	return nil
}

// readSnapshot opens a snapshot through the store (FileSnapshotStore checks
// its CRC in Open) and decodes it.
func readSnapshot(snaps raft.SnapshotStore, id string) error {
	_, rc, err := snaps.Open(id)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxSnapshotBytes+1))
	if err = errors.Join(err, rc.Close()); err != nil {
		return err
	}
	_, _, err = decodeSnapshot(b)
	return err
}
