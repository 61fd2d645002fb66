package lease

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// DefaultFilterCells is the size of a Filter made with cells ≤ 0: 16,384
// cells, 128 KiB.
const DefaultFilterCells = 1 << 14

// Filter decides which keys get lease state at an SDK. A key whose calls at
// this SDK are too few to fill a lease gains nothing from state (every call
// is a decision by its home node anyway), and state per key is what made
// the default mode cost more than strict on many cold keys: an entry to
// create, look up, lock, sweep every second and collect. So a key starts
// without state, its calls counted here, and gets state (NewWarmKey) only
// once its calls reach Config.WarmTokens per lease TTL over one
// Config.RateWindow (16 calls in 200 ms by default: 80/s); a key with state
// loses it again after ForgetAfter cold (Key.Plan). Counting over the rate
// window rather than one TTL keeps a key whose calls merely bunch up (a
// 20/s key sees 4 calls in some 50 ms in 2 % of them) without state.
//
// The counts are a count-min sketch with two cells per key, each cell the
// count of the current RateWindow-long period and that period's number,
// packed in one word: no per-key memory, a fixed size, lock-free. A collision can
// only raise a count, so a key that should get state always does (within
// the period its calls reach WarmTokens); a cold key is given state by
// mistake only when both of its cells are shared with enough calls of
// other keys in one period, which costs it an entry and nothing else.
//
// Note is safe for concurrent use and, like the rest of this package,
// takes the time as an argument.
type Filter struct {
	cells  []atomic.Uint64
	mask   uint64
	period int64  // nanoseconds: the rate window
	warm   uint64 // calls per period that give a key state
}

// NewFilter returns a filter for cfg (with defaults applied) of at least
// cells cells (rounded up to a power of two; DefaultFilterCells if
// cells ≤ 0).
func NewFilter(cfg Config, cells int) *Filter {
	cfg = cfg.WithDefaults()
	if cells <= 0 {
		cells = DefaultFilterCells
	}
	n := uint64(1) << bits.Len64(uint64(cells-1))
	return &Filter{
		cells:  make([]atomic.Uint64, n),
		mask:   n - 1,
		period: int64(cfg.RateWindow),
		warm:   uint64(max(1, math.Ceil(cfg.WarmTokens*float64(cfg.RateWindow)/float64(cfg.TTL)))),
	}
}

// Note counts n calls at now of the key whose hash is h (any well-mixed
// 64-bit hash of the key, such as route.Hash) and reports whether the key's
// calls in the current period have reached WarmTokens per TTL: the caller
// should give the key state (NewWarmKey) and decide this call with it.
func (f *Filter) Note(now int64, h uint64, n int64) bool {
	if n <= 0 {
		return false
	}
	epoch := uint64(uint32(floorDiv(now, f.period)))
	add := uint64(min(n, math.MaxUint32))
	c1 := f.add(h&f.mask, epoch, add)
	// The second cell from the hash's other bits, mixed so that keys
	// sharing their first cell rarely share their second.
	c2 := f.add((bits.RotateLeft64(h, 32)*0x9e3779b97f4a7c15)>>32&f.mask, epoch, add)
	return min(c1, c2) >= f.warm
}

// add adds n to cell i's count for epoch (restarting it from 0 if the cell
// holds an older period) and returns the new count.
func (f *Filter) add(i, epoch, n uint64) uint64 {
	c := &f.cells[i]
	for {
		old := c.Load()
		count := uint64(0)
		if old>>32 == epoch {
			count = old & math.MaxUint32
		}
		count = min(count+n, math.MaxUint32)
		if c.CompareAndSwap(old, epoch<<32|count) {
			return count
		}
	}
}

// floorDiv is a/b rounded down, for b > 0.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}
