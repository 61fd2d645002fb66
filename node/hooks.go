package node

import (
	"sync/atomic"
	"time"
)

// skewControl is the fault layer's hold on node time (nodehook.Offset): the
// skew, mirrored in the clock-skew metric.
type skewControl struct{ n *Node }

func (s skewControl) SetOffset(d time.Duration) {
	s.n.skew.SetOffset(d)
	s.n.m.clockSkew.Set(d.Seconds())
}

func (s skewControl) Offset() time.Duration { return s.n.skew.Offset() }

// closeFault closes what the fault layer opened, if anything.
func (n *Node) closeFault() {
	if n.fault.Close != nil {
		_ = n.fault.Close()
	}
}

// diskDelay is the fault layer's slow disk (nodehook.Delay): how long every
// write to the Raft log and stable store waits first.
type diskDelay struct{ d atomic.Int64 }

func (d *diskDelay) SetDelay(v time.Duration) { d.d.Store(int64(max(v, 0))) }

func (d *diskDelay) Delay() time.Duration { return time.Duration(d.d.Load()) }
