package consensus

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

// stoppedDataDir runs a one-node cluster, sets a few rules, stops it and
// returns the cluster (to start the node again) and its node.
func stoppedDataDir(t *testing.T, opts ...func(*Config)) (*cluster, *testNode) {
	t.Helper()
	c := newCluster(t, 1, append([]func(*Config){func(c *Config) { c.MaxVoters = 1 }}, opts...)...)
	n := c.leader()
	ctx := ctxT(t, 20*time.Second)
	for _, p := range []string{"a", "b", "c"} {
		if _, err := n.store.Set(ctx, rule(p, "5/s")); err != nil {
			t.Fatalf("Set %s: %v", p, err)
		}
	}
	c.stop(n)
	return c, n
}

// openErr opens n's Store with cfg adjusted by adjust and returns the error,
// which must wrap ErrDataDir and mention every string in names.
func openErr(t *testing.T, c *cluster, n *testNode, adjust func(*Config), names ...string) {
	t.Helper()
	cfg := c.config(n, nil)
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := Open(cfg)
	if err == nil {
		_ = s.Close()
		t.Fatalf("Open succeeded; want ErrDataDir")
	}
	_ = cfg.Layer.Close() // the caller keeps the layer when Open fails
	if !errors.Is(err, ErrDataDir) {
		t.Errorf("Open = %v; want ErrDataDir", err)
	}
	for _, s := range names {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Open = %v; want it to mention %q", err, s)
		}
	}
	t.Logf("Open: %v", err)
}

func TestDataDirOfAnotherNodeOrCluster(t *testing.T) {
	c, n := stoppedDataDir(t, func(c *Config) { c.ClusterID = "blue" })
	openErr(t, c, n, func(cfg *Config) { cfg.ClusterID = "green" }, n.dir, `"blue"`, `"green"`)
	openErr(t, c, n, func(cfg *Config) { cfg.ClusterID = "" }, n.dir, `"blue"`)
	openErr(t, c, n, func(cfg *Config) {
		cfg.NodeID = "n7"
		cfg.Bootstrap = nil
	}, n.dir, `"n1"`, `"n7"`)

	// The right node and cluster still start, with their table.
	c.start(n, nil)
	c.waitTables(table(t, rule("a", "5/s"), rule("b", "5/s"), rule("c", "5/s")))
	c.stop(n)

	// A directory written before identity files existed is adopted.
	if err := os.Remove(filepath.Join(n.dir, identityFile)); err != nil {
		t.Fatal(err)
	}
	c.start(n, nil)
	c.waitTables(table(t, rule("a", "5/s"), rule("b", "5/s"), rule("c", "5/s")))
	c.stop(n)
	openErr(t, c, n, func(cfg *Config) { cfg.ClusterID = "green" }, `"blue"`, `"green"`)

	// An identity file that is not one.
	if err := os.WriteFile(filepath.Join(n.dir, identityFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	openErr(t, c, n, nil, filepath.Join(n.dir, identityFile))
}

func TestCorruptDataDir(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, dir string)
		names   []string
	}{
		{"sealed segment without an index block (raft-wal#31 on disk)", func(t *testing.T, dir string) {
			// The state raft-wal v0.4.0 left after truncating a tail: the
			// segment marked sealed in the metadata, with no index block.
			walDir := filepath.Join(dir, "wal")
			last, err := lastIndexOf(walDir)
			if err != nil {
				t.Fatal(err)
			}
			db := &metadb.BoltMetaDB{}
			st, err := db.Load(walDir)
			if err != nil {
				t.Fatal(err)
			}
			tail := &st.Segments[len(st.Segments)-1]
			tail.SealTime, tail.IndexStart, tail.MaxIndex = time.Now(), 0, last
			// ... followed by a new tail, whose file raft-wal creates.
			st.Segments = append(st.Segments, types.SegmentInfo{
				ID: st.NextSegmentID, BaseIndex: last + 1, MinIndex: last + 1,
				Codec: tail.Codec, CreateTime: time.Now(), SizeLimit: tail.SizeLimit,
			})
			st.NextSegmentID++
			if err := errors.Join(db.CommitState(st), db.Close()); err != nil {
				t.Fatal(err)
			}
		}, []string{"wal", "sealed segment has no index block"}},
		{"metadata that is not a database", func(t *testing.T, dir string) {
			overwrite(t, filepath.Join(dir, "wal", "wal-meta.db"), 0, 8192)
		}, []string{filepath.Join("wal")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, n := stoppedDataDir(t)
			tc.corrupt(t, n.dir)
			openErr(t, c, n, nil, append([]string{n.dir}, tc.names...)...)
		})
	}
}

// TestLogBehindSnapshots checks the case raft itself would only find on its
// state machine goroutine, with a panic: the log was compacted behind a
// snapshot and the snapshot is gone.
func TestLogBehindSnapshots(t *testing.T) {
	c, n := stoppedDataDir(t, func(c *Config) {
		c.SnapshotThreshold = 4
		c.SnapshotInterval = 20 * time.Millisecond
	})
	c.start(n, nil)
	ctx := ctxT(t, 20*time.Second)
	for _, p := range []string{"d", "e", "f", "g", "h", "i", "j", "k", "l", "m"} {
		if _, err := n.store.Set(ctx, rule(p, "5/s")); err != nil {
			t.Fatalf("Set %s: %v", p, err)
		}
	}
	c.eventually(10*time.Second, "the log to be compacted behind a snapshot", func() bool {
		first, err := n.store.wal.FirstIndex()
		return err == nil && first > 1 && n.store.Stats().LastSnapshotIndex > 0
	})
	c.stop(n)

	// Every snapshot's state damaged: the CRC check refuses them.
	states, err := filepath.Glob(filepath.Join(n.dir, "snapshots", "*", "state.bin"))
	if err != nil || len(states) == 0 {
		t.Fatalf("snapshots: %v, %v", states, err)
	}
	for _, s := range states {
		overwrite(t, s, 0, 16)
	}
	openErr(t, c, n, nil, filepath.Join(n.dir, "snapshots"), "CRC")

	// Snapshots removed altogether: the log alone does not reach back.
	if err := os.RemoveAll(filepath.Join(n.dir, "snapshots")); err != nil {
		t.Fatal(err)
	}
	openErr(t, c, n, nil, filepath.Join(n.dir, "wal"), "missing")
}

// lastIndexOf opens the log in walDir, reads its last index and closes it.
func lastIndexOf(walDir string) (uint64, error) {
	w, meta, err := openLog(walDir, hclog.NewNullLogger(), walSegmentSize)
	if err != nil {
		return 0, err
	}
	last, err := w.LastIndex()
	return last, errors.Join(err, w.Close(), meta.Close())
}

// overwrite writes n bytes of a fixed pattern at off in path.
func overwrite(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(strings.Repeat("\xa5garbage", n/8+1))[:n]
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
