package consensus

import (
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// slowLog is the Raft log and stable store on a slow disk, for the fault
// suite (Config.LogDelay): every write waits delay() before it is made,
// which is where the disk's fsync would take the time. Reads are not
// delayed.
type slowLog struct {
	*wal.WAL
	delay func() time.Duration
}

func (s slowLog) wait() {
	if d := s.delay(); d > 0 {
		time.Sleep(d)
	}
}

func (s slowLog) StoreLog(l *raft.Log) error {
	s.wait()
	return s.WAL.StoreLog(l)
}

func (s slowLog) StoreLogs(ls []*raft.Log) error {
	s.wait()
	return s.WAL.StoreLogs(ls)
}

func (s slowLog) Set(k, v []byte) error {
	s.wait()
	return s.WAL.Set(k, v)
}

func (s slowLog) SetUint64(k []byte, v uint64) error {
	s.wait()
	return s.WAL.SetUint64(k, v)
}
