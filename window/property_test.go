package window

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// starts are the node times runs begin at: a realistic one, the Unix epoch
// (so that backward steps cross into negative epochs), and a negative one.
var starts = []int64{1_700_000_000_012_345_678, 0, -5*int64(time.Second) + 7}

// TestWindowMatchesModel drives random operations against a Window and the
// reference model for K in {1, 2, 10, 599, 600}, over at least ten times the
// ring's length of node time, with small steps, slot edges, jumps of about
// the window and the ring, idle periods of up to hours and backward steps,
// in phases: mixed, dense (requests in most slots), and sparse (a few slots
// with gaps, and bursts). After every operation, everything a reader can
// see (Counts, Slots, Demand, CurrentQPS, Total, OpenEpoch, Quota) must
// agree with the model, and the window's form its invariants; over each K's
// runs, windows must have gone from sparse words to a dense ring (and
// widened it) and back, and short windows kept the last minute both in
// sparse words and in a second ring.
func TestWindowMatchesModel(t *testing.T) {
	for _, k := range []int64{1, 2, 10, 599, 600} {
		var mu sync.Mutex
		var all forms
		t.Run(fmt.Sprintf("K=%d", k), func(t *testing.T) {
			for si, start := range starts {
				for _, count := range []int64{7, 1000, limits.MaxCount} {
					seed := uint64(k)<<32 | uint64(si)<<16 | uint64(count%65536)
					t.Run(fmt.Sprintf("start=%d/count=%d", si, count), func(t *testing.T) {
						t.Parallel()
						f := runModel(t, k, count, start, seed)
						mu.Lock()
						defer mu.Unlock()
						all.sparse += f.sparse
						all.dense += f.dense
						all.minute += f.minute
						all.sparseMinute += f.sparseMinute
						all.widened += f.widened
						all.backToSparse += f.backToSparse
					})
				}
			}
		})
		if t.Failed() {
			return
		}
		t.Logf("K=%d: steps sparse %d (with a second ring %d), dense %d (widened %d), back to sparse %d times",
			k, all.sparse, all.sparseMinute, all.dense, all.widened, all.backToSparse)
		switch {
		case all.sparse == 0 || all.dense == 0 || all.backToSparse == 0 || all.widened == 0:
			t.Errorf("K=%d: the runs did not go through every form: %+v", k, all)
		case k <= 10 && (all.sparseMinute == 0 || all.sparse-all.sparseMinute == 0):
			// (A window of 599 slots keeps at most one slot for the minute
			// only, and rarely goes sparse with a second ring.)
			t.Errorf("K=%d: the last minute was not kept both ways: %+v", k, all)
		}
	}
}

func runModel(t *testing.T, k, count, start int64, seed uint64) forms {
	rate := limits.Rate{Count: count, Window: time.Duration(k) * limits.Slot}
	h, err := newHarness(rate, start)
	if err != nil {
		t.Fatalf("New(%v, %v) = %v", rate, start, err)
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	minOps := 1500
	if k >= 599 || testing.Short() || raceEnabled {
		minOps = 400
	}
	span := 10 * max(k, minRing) * slotNs
	var ops []op
	for i := 0; i < minOps || h.now-start < span; i++ {
		o := randomOp(rng, k, h.m.count, phase(i/200%3))
		ops = append(ops, o)
		if msg := h.step(o); msg != "" {
			tail := ops[max(0, len(ops)-8):]
			t.Fatalf("seed %#x step %d: %v: %s\nlast ops: %v", seed, i, o, msg, tail)
		}
	}
	return h.forms
}

// FuzzWindowOps decodes an operation sequence from the input and holds the
// Window to the reference model after every operation, like
// TestWindowMatchesModel. Byte 0 picks K, byte 1 the count, byte 2 the start
// time; every 5 bytes after that are one op (see decodeOp).
func FuzzWindowOps(f *testing.F) {
	f.Add([]byte{2, 3, 0, 0, 1, 0, 10, 5, 0, 0, 0, 0, 5, 1, 1, 0, 0, 3})
	f.Add([]byte{6, 1, 1, 1, 5, 1, 0, 200, 2, 3, 2, 0, 9, 7, 6, 0, 1, 4})
	f.Add([]byte{0, 4, 2, 0, 7, 0, 0, 4, 1, 6, 0, 7, 2, 0, 0, 1, 0, 2, 1, 3, 3, 0})
	f.Add([]byte{3, 2, 0, 4, 3, 0, 9, 9, 5, 2, 2, 4, 5, 8, 3, 0, 0, 0, 1, 2})
	// Requests in ten slots in a row (sparse words, then a dense ring),
	// one large enough to widen it, a read, a gap of a minute (back to
	// sparse words), and a refund and reservation across it.
	upgrade := []byte{0, 3, 0}
	for range 10 {
		upgrade = append(upgrade, 0, 1, 0, 1, 5)
	}
	upgrade = append(upgrade, 0, 0, 0, 9, 60, 7, 0, 0, 1, 0, 2, 1, 0, 3, 9, 8, 4, 0, 61, 5, 9, 0, 0, 1, 7, 0, 1, 0, 1, 7)
	f.Add(upgrade)
	// The same for a 60 s window, with slots spread over its ring.
	long := []byte{6, 3, 0}
	for i := range 12 {
		long = append(long, 0, 1, 0, byte(1+i%3), byte(2+i))
	}
	long = append(long, 7, 3, 0, 0, 0, 2, 7, 0, 5, 3)
	f.Add(long)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		ks := []int64{1, 2, 3, 10, 11, 12, 600, 599, 50}
		counts := []int64{1, 3, 10, 1000, limits.MaxCount}
		k, count, start := ks[int(data[0])%len(ks)], counts[int(data[1])%len(counts)], starts[int(data[2])%len(starts)]
		rate := limits.Rate{Count: count, Window: time.Duration(k) * limits.Slot}
		h, err := newHarness(rate, start)
		if err != nil {
			t.Fatalf("New(%v, %v) = %v", rate, start, err)
		}
		h.quick = true
		data = data[3:]
		for i := 0; len(data) >= 5 && i < 200; i++ {
			o := decodeOp(data[:5], k, h.m.count)
			data = data[5:]
			if msg := h.step(o); msg != "" {
				t.Fatalf("step %d: %v: %s", i, o, msg)
			}
		}
	})
}

// decodeOp reads one op from 5 bytes: kind, time-step class, a 16-bit
// magnitude, and n.
func decodeOp(b []byte, k, count int64) op {
	o := op{kind: opKind(b[0] % byte(numOps))}
	mag := int64(binary.BigEndian.Uint16(b[2:4]))
	slot := time.Duration(slotNs)
	switch b[1] % 8 {
	case 0:
		o.dt = time.Duration(mag * 1000)
	case 1:
		o.dt = slot * time.Duration(mag%4)
	case 2:
		o.dt = slot * time.Duration(k-1+mag%3)
	case 3:
		o.dt = slot * time.Duration(max(k, minRing)-1+mag%3)
	case 4:
		o.dt = time.Duration(mag%120) * time.Second
	case 5:
		o.dt = time.Duration(mag) * time.Second
	case 6:
		o.dt = -time.Duration(mag * 1000)
	case 7:
		o.dt = -slot * time.Duration(mag%(k+2))
	}
	switch v := int64(b[4]); v {
	case 0:
		o.n = 0
	case 1:
		o.n = -1
	case 2:
		o.n = count
	case 3:
		o.n = count + 1
	case 4:
		o.n = limits.MaxCount
	default:
		o.n = v * max(1, count/64)
	}
	o.extra = mag%(k+3) - 1
	return o
}
