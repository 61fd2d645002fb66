package consensus

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// walModel opens the Raft log the way the Store does (openLog) and keeps, next
// to it, what the log must hold: the term of every index from first to last.
// Entries carry their index and term in their data, so a read that returns
// the wrong entry is caught too.
type walModel struct {
	t       *testing.T
	dir     string
	segSize int
	w       *wal.WAL
	meta    *metadb.BoltMetaDB
	first   uint64
	terms   []uint64 // terms[i] is the term of index first+i
}

func newWALModel(t *testing.T, segSize int) *walModel {
	m := &walModel{t: t, dir: t.TempDir(), segSize: segSize}
	m.open()
	t.Cleanup(m.close)
	return m
}

func (m *walModel) open() {
	m.t.Helper()
	w, meta, err := openLog(m.dir, hclog.NewNullLogger(), m.segSize)
	if err != nil {
		m.t.Fatalf("reopening the log: %v", err)
	}
	m.w, m.meta = w, meta
}

func (m *walModel) close() {
	if m.w == nil {
		return
	}
	if err := m.w.Close(); err != nil {
		m.t.Errorf("closing the log: %v", err)
	}
	if err := m.meta.Close(); err != nil {
		m.t.Errorf("closing the metadata: %v", err)
	}
	m.w, m.meta = nil, nil
}

func (m *walModel) last() uint64 { return m.first + uint64(len(m.terms)) - 1 }

func entryData(index, term uint64, size int) []byte {
	b := fmt.Appendf(nil, "index=%d term=%d;", index, term)
	return append(b, bytes.Repeat([]byte{'x'}, max(0, size-len(b)))...)
}

// appendLogs appends n entries of the given term after the last one, in
// batches of batch, as raft does.
func (m *walModel) appendLogs(n int, term uint64, size, batch int) {
	m.t.Helper()
	next := m.last() + 1
	if len(m.terms) == 0 && m.first == 0 {
		m.first, next = 1, 1
	}
	for n > 0 {
		k := min(n, batch)
		logs := make([]*raft.Log, k)
		for i := range logs {
			idx := next + uint64(i)
			logs[i] = &raft.Log{Index: idx, Term: term, Type: raft.LogCommand, Data: entryData(idx, term, size)}
		}
		if err := m.w.StoreLogs(logs); err != nil {
			m.t.Fatalf("StoreLogs(%d..%d, term %d): %v", next, next+uint64(k)-1, term, err)
		}
		for range k {
			m.terms = append(m.terms, term)
		}
		next += uint64(k)
		n -= k
	}
}

// truncateTail deletes every entry from index on, as raft does when a
// follower's log conflicts with the leader's ("clearing log suffix").
func (m *walModel) truncateTail(from uint64) {
	m.t.Helper()
	last := m.last()
	if err := m.w.DeleteRange(from, last); err != nil {
		m.t.Fatalf("DeleteRange(%d, %d): %v", from, last, err)
	}
	m.terms = m.terms[:from-m.first]
}

// restartAt deletes the whole log and starts it again at index, as raft
// does after installing a snapshot.
func (m *walModel) restartAt(index, term uint64, n, size int) {
	m.t.Helper()
	if err := m.w.DeleteRange(m.first, m.last()); err != nil {
		m.t.Fatalf("DeleteRange(%d, %d) of the whole log: %v", m.first, m.last(), err)
	}
	m.first, m.terms = index, nil
	logs := make([]*raft.Log, n)
	for i := range logs {
		idx := index + uint64(i)
		logs[i] = &raft.Log{Index: idx, Term: term, Type: raft.LogCommand, Data: entryData(idx, term, size)}
		m.terms = append(m.terms, term)
	}
	if err := m.w.StoreLogs(logs); err != nil {
		m.t.Fatalf("StoreLogs(%d..) after deleting the whole log: %v", index, err)
	}
}

// check reads every entry back and compares it with the model.
func (m *walModel) check(when string) {
	m.t.Helper()
	first, err := m.w.FirstIndex()
	if err != nil {
		m.t.Fatalf("%s: FirstIndex: %v", when, err)
	}
	last, err := m.w.LastIndex()
	if err != nil {
		m.t.Fatalf("%s: LastIndex: %v", when, err)
	}
	if first != m.first || last != m.last() {
		m.t.Fatalf("%s: log holds %d..%d, want %d..%d", when, first, last, m.first, m.last())
	}
	bad := 0
	for i, term := range m.terms {
		idx := m.first + uint64(i)
		var l raft.Log
		if err := m.w.GetLog(idx, &l); err != nil {
			if bad++; bad <= 3 {
				m.t.Errorf("%s: GetLog(%d): %v", when, idx, err)
			}
			continue
		}
		if l.Index != idx || l.Term != term || !bytes.HasPrefix(l.Data, fmt.Appendf(nil, "index=%d term=%d;", idx, term)) {
			if bad++; bad <= 3 {
				m.t.Errorf("%s: GetLog(%d) = index %d term %d data %.20q; want term %d", when, idx, l.Index, l.Term, l.Data, term)
			}
		}
	}
	if bad > 0 {
		m.t.Fatalf("%s: %d of %d entries (%d..%d) unreadable or wrong", when, bad, len(m.terms), m.first, m.last())
	}
}

func (m *walModel) reopen(when string) {
	m.t.Helper()
	m.close()
	m.open()
	m.check(when)
}

// TestWALTailTruncationSurvivesReopen is the regression test for
// hashicorp/raft-wal#31. raft-wal v0.4.0 marked the tail segment sealed in
// its metadata on DeleteRange of a suffix but never wrote the segment's index
// block; everything kept working until the log was reopened, and then every
// entry of that segment failed with "sealed segment has no index block".
// hashicorp/raft's NewRaft reads those entries while it scans the log for
// configuration changes, and panics on the error: the node could never start
// again. raft-wal v0.4.1 (hashicorp/raft-wal#33) seals the segment for real
// (ForceSeal). Each case checks every entry after the truncation, after a
// reopen, and after more appends and another reopen.
func TestWALTailTruncationSurvivesReopen(t *testing.T) {
	// Small segments so that a few hundred entries span several of them and
	// truncations cross segment boundaries.
	const segSize, size = 64 << 10, 1000
	for _, tc := range []struct {
		name string
		run  func(m *walModel)
	}{
		{"one entry of the tail segment (raft-wal#31)", func(m *walModel) {
			m.appendLogs(10, 1, 100, 1)
			m.truncateTail(10)
			m.check("after the truncation")
			m.appendLogs(1, 2, 100, 1)
		}},
		{"a suffix of the tail segment", func(m *walModel) {
			m.appendLogs(30, 1, size, 4)
			m.truncateTail(25)
			m.appendLogs(8, 2, size, 3)
		}},
		{"a suffix spanning segments", func(m *walModel) {
			m.appendLogs(300, 1, size, 7) // about five segments
			m.truncateTail(120)
			m.check("after the truncation")
			m.appendLogs(50, 3, size, 5)
		}},
		{"the whole tail segment and part of the one before", func(m *walModel) {
			// About 60 entries fit in a segment: 70 cover the tail segment.
			m.appendLogs(300, 1, size, 1)
			m.truncateTail(m.last() - 70)
			m.appendLogs(10, 2, size, 2)
		}},
		{"with nothing appended after it", func(m *walModel) {
			m.appendLogs(40, 1, size, 4)
			m.truncateTail(33)
		}},
		{"again and again", func(m *walModel) {
			m.appendLogs(20, 1, size, 2)
			for round := range 6 {
				term := uint64(round + 2)
				m.truncateTail(m.last() - uint64(round%3))
				m.appendLogs(25, term, size, 5)
				m.reopen(fmt.Sprintf("round %d", round))
			}
		}},
		{"after the head was compacted", func(m *walModel) {
			m.appendLogs(200, 1, size, 10)
			if err := m.w.DeleteRange(1, 99); err != nil {
				t.Fatalf("DeleteRange(1, 99): %v", err)
			}
			m.first, m.terms = 100, m.terms[99:]
			m.truncateTail(180)
			m.appendLogs(20, 2, size, 4)
		}},
		{"after a snapshot replaced the whole log", func(m *walModel) {
			m.appendLogs(50, 1, size, 5)
			m.restartAt(5000, 3, 10, size)
			m.truncateTail(5007)
			m.appendLogs(5, 4, size, 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newWALModel(t, segSize)
			tc.run(m)
			m.check("before reopening")
			m.reopen("after reopening")
			// The log must stay writable and readable after the reopen.
			m.appendLogs(30, 99, size, 3)
			m.truncateTail(m.last() - 4)
			m.appendLogs(2, 100, size, 1)
			m.reopen("after a second reopen")
		})
	}
}
