// Package clock gives QuotaMesh its notion of time: node time, an int64 count
// of nanoseconds since the Unix epoch as this node sees it.
//
// Reading time.Now costs about 50-65 ns on the machines QuotaMesh is tuned
// on, which is most of the budget of one Allow. Coarse is a clock whose Now is
// one atomic load: a single goroutine refreshes it every Resolution (default
// 1 ms), so a reading lags true time by at most Resolution plus the delay of
// scheduling that goroutine. Slots are 100 ms wide, so the lag moves an
// admission into the previous slot at most a few percent of the time and
// never changes how many are admitted.
//
// Node time is the wall clock read once at start plus the monotonic time
// elapsed since: a wall-clock step (NTP) during the life of the process never
// moves node time, which therefore never goes backwards. Skewed adds an offset
// that only tests set, to play clock skew in the fault suite.
//
// An idle process should not pay a thousand wake-ups a second for a clock
// nobody reads: when readers touched fewer than a tenth of the last hundred
// refreshes, the clock goes idle. Its goroutine then wakes every
// IdleResolution only, and Now reads the monotonic clock itself (the cost
// of time.Now, still no lock and no channel) until readers come back often
// enough, when refreshing resumes. Readings never go backwards across the
// switch.
//
// Shared hands out one Coarse for the whole process, reference counted: the
// goroutine starts with the first Acquire and stops, and is waited for, with
// the last Release. It is the package's one piece of global state, kept
// because two Coarse clocks would double the wake-ups for no gain.
package clock

import (
	"sync"
	"sync/atomic"
	"time"
)

// Source is anything that tells node time.
type Source interface {
	// Now returns node time in nanoseconds since the Unix epoch. Successive
	// calls never go backwards for the clocks in this package.
	Now() int64
}

// DefaultResolution is how often a Coarse clock refreshes unless told
// otherwise.
const DefaultResolution = time.Millisecond

// IdleResolution is how often an idle Coarse clock's goroutine wakes to see
// whether it is read again.
const IdleResolution = 50 * time.Millisecond

const (
	// idleWindow refreshes are looked at to decide that the clock is idle:
	// fewer than idleTouched of them read by anyone.
	idleWindow  = 100
	idleTouched = 10
	// wakeReads reads within one IdleResolution end idleness (400/s).
	wakeReads = 20
)

// Coarse is a clock read with an atomic load or two. Its zero value is not usable;
// call NewCoarse, and Close when done.
type Coarse struct {
	now atomic.Int64
	_   [56]byte // readers' stores below stay off the line every reader loads
	// state holds stTouched, a reader read since the last refresh (while
	// refreshing), and stIdle, the clock is idle; idleReads counts the
	// reads since the goroutine last woke while it is.
	state      atomic.Uint32
	idleReads  atomic.Int64
	_          [48]byte
	wall0      int64
	start      time.Time
	resolution time.Duration
	stop       chan struct{}
	done       chan struct{}
	closeOnce  sync.Once
}

// NewCoarse starts a coarse clock that refreshes every resolution (zero means
// DefaultResolution; values below 100 µs are raised to 100 µs). Close stops
// its goroutine.
func NewCoarse(resolution time.Duration) *Coarse {
	if resolution == 0 {
		resolution = DefaultResolution
	}
	resolution = max(resolution, 100*time.Microsecond)
	start := time.Now()
	c := &Coarse{
		wall0:      start.UnixNano(),
		start:      start,
		resolution: resolution,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.now.Store(c.wall0)
	go c.run()
	return c
}

func (c *Coarse) run() {
	defer close(c.done)
	t := time.NewTimer(c.resolution)
	defer t.Stop()
	var recent [idleWindow]bool // which of the last refreshes were read
	at, touched := 0, 0
	busy := func() { // count the whole window as read
		for i := range recent {
			recent[i] = true
		}
		touched = idleWindow
	}
	busy() // a new clock is not idle before a window has passed
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.refresh()
		if c.state.Load()&stIdle != 0 {
			if c.idleReads.Swap(0) >= wakeReads {
				// Read again: refresh from now on, and count the window
				// as read so that it does not go idle at once.
				busy()
				c.state.Store(0)
				t.Reset(c.resolution)
				continue
			}
			t.Reset(IdleResolution)
			continue
		}
		read := c.state.Swap(0)&stTouched != 0
		if recent[at] != read {
			if read {
				touched++
			} else {
				touched--
			}
			recent[at] = read
		}
		at = (at + 1) % idleWindow
		if touched < idleTouched {
			c.idleReads.Store(0)
			c.state.Store(stIdle)
			t.Reset(IdleResolution)
			continue
		}
		t.Reset(c.resolution)
	}
}

// refresh moves the reading to the monotonic clock's, never back (an idle
// clock's readers may have moved it further).
func (c *Coarse) refresh() { c.advance(c.Precise()) }

// advance raises the reading to t and returns the reading.
func (c *Coarse) advance(t int64) int64 {
	for {
		cur := c.now.Load()
		if t <= cur {
			return cur
		}
		if c.now.CompareAndSwap(cur, t) {
			return t
		}
	}
}

// Now returns the node time of the last refresh: two atomic loads, and a
// compare-and-swap once per refresh period at most. While the clock is idle it reads
// the monotonic clock instead.
func (c *Coarse) Now() int64 {
	st := c.state.Load()
	if st == stTouched {
		return c.now.Load()
	}
	if st&stIdle != 0 {
		c.idleReads.Add(1)
		return c.advance(c.Precise())
	}
	// Not a store: the goroutine may have made the clock idle since.
	c.state.CompareAndSwap(0, stTouched)
	return c.now.Load()
}

// Idle reports whether the clock is idle (see the package comment).
func (c *Coarse) Idle() bool { return c.state.Load()&stIdle != 0 }

// Coarse.state bits.
const (
	stTouched = 1 << iota
	stIdle
)

// Precise returns node time read now, at the cost of a monotonic clock read.
func (c *Coarse) Precise() int64 { return c.wall0 + int64(time.Since(c.start)) }

// Resolution is the refresh period.
func (c *Coarse) Resolution() time.Duration { return c.resolution }

// Close stops the refreshing goroutine and waits for it. It is safe to call
// more than once; Now keeps returning the last reading.
func (c *Coarse) Close() {
	c.closeOnce.Do(func() { close(c.stop) })
	<-c.done
}

// shared is the process-wide Coarse clock handed out by Acquire.
var shared struct {
	mu    sync.Mutex
	clock *Coarse
	refs  int
}

// Handle is one reference to the shared coarse clock.
type Handle struct {
	*Coarse
	once sync.Once
}

// Acquire returns a handle on the process-wide coarse clock, starting it
// (at DefaultResolution) if this is the first reference.
func Acquire() *Handle {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.refs == 0 {
		shared.clock = NewCoarse(DefaultResolution)
	}
	shared.refs++
	return &Handle{Coarse: shared.clock}
}

// Release drops the reference; the last one stops the clock and waits for its
// goroutine. Releasing a handle twice is a no-op.
func (h *Handle) Release() {
	h.once.Do(func() {
		shared.mu.Lock()
		defer shared.mu.Unlock()
		shared.refs--
		if shared.refs == 0 {
			shared.clock.Close()
			shared.clock = nil
		}
	})
}

// Skewed is a Source shifted by an offset that tests may change at run time
// (the fault suite's clock-skew nemesis). Its zero offset adds nothing. Unlike
// its base, a Skewed clock goes backwards when the offset is lowered: that is
// what it is for.
type Skewed struct {
	base   Source
	offset atomic.Int64
}

// NewSkewed wraps base.
func NewSkewed(base Source) *Skewed { return &Skewed{base: base} }

// Now returns the base time plus the offset.
func (s *Skewed) Now() int64 { return s.base.Now() + s.offset.Load() }

// SetOffset sets the offset added to the base clock.
func (s *Skewed) SetOffset(d time.Duration) { s.offset.Store(int64(d)) }

// Offset returns the current offset.
func (s *Skewed) Offset() time.Duration { return time.Duration(s.offset.Load()) }

// Manual is a Source that moves only when told: for tests and the simulator.
// It is safe for concurrent use.
type Manual struct{ now atomic.Int64 }

// NewManual returns a manual clock set to t (nanoseconds).
func NewManual(t int64) *Manual {
	m := &Manual{}
	m.now.Store(t)
	return m
}

// Now returns the time last set.
func (m *Manual) Now() int64 { return m.now.Load() }

// Set moves the clock to t, backwards too.
func (m *Manual) Set(t int64) { m.now.Store(t) }

// Advance moves the clock by d and returns the new time.
func (m *Manual) Advance(d time.Duration) int64 { return m.now.Add(int64(d)) }
