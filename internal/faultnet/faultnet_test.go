package faultnet

import (
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an in-memory net.PacketConn that records what is written to
// it and serves reads from a channel.
type recorder struct {
	mu      sync.Mutex
	written [][]byte
	at      []time.Time
	in      chan datagram
	closed  chan struct{}
	once    sync.Once
}

type datagram struct {
	data []byte
	from net.Addr
}

func newRecorder() *recorder {
	return &recorder{in: make(chan datagram, 16), closed: make(chan struct{})}
}

func (r *recorder) WriteTo(b []byte, _ net.Addr) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.written = append(r.written, append([]byte(nil), b...))
	r.at = append(r.at, time.Now())
	return len(b), nil
}

func (r *recorder) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-r.in:
		return copy(b, d.data), d.from, nil
	case <-r.closed:
		return 0, nil, net.ErrClosed
	}
}

func (r *recorder) Close() error                     { r.once.Do(func() { close(r.closed) }); return nil }
func (r *recorder) LocalAddr() net.Addr              { return addr("local:1") }
func (r *recorder) SetDeadline(time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

func (r *recorder) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.written)
}

type addr string

func (a addr) Network() string { return "mem" }
func (a addr) String() string  { return string(a) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNoFaultsPassesThrough(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	for i := range 100 {
		if n, err := c.WriteTo([]byte{byte(i)}, addr("peer:1")); n != 1 || err != nil {
			t.Fatalf("WriteTo #%d = %d, %v, want 1, nil", i, n, err)
		}
	}
	got := r.got()
	if len(got) != 100 {
		t.Fatalf("%d datagrams written through, want 100", len(got))
	}
	for i, d := range got {
		if d[0] != byte(i) {
			t.Fatalf("datagram %d is %d: order changed with no faults", i, d[0])
		}
	}
	if s := c.Stats(); s != (Stats{}) {
		t.Errorf("Stats() = %+v with no faults, want zero (fast path)", s)
	}
}

func TestFastPathAllocatesNothing(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	b := make([]byte, 64)
	to := addr("peer:1")
	// The recorder allocates itself; compare against calling it directly.
	direct := testing.AllocsPerRun(100, func() { _, _ = r.WriteTo(b, to) })
	wrapped := testing.AllocsPerRun(100, func() { _, _ = c.WriteTo(b, to) })
	if wrapped != direct {
		t.Errorf("WriteTo with no faults: %v allocs/op, the wrapped conn alone %v", wrapped, direct)
	}
}

func TestDropIsSeededAndProportional(t *testing.T) {
	run := func(seed uint64) []byte {
		r := newRecorder()
		c := Wrap(r, seed)
		defer c.Close()
		if err := c.SetFaults(Faults{Drop: 0.3}); err != nil {
			t.Fatal(err)
		}
		for i := range 1000 {
			_, _ = c.WriteTo([]byte{byte(i), byte(i >> 8)}, addr("peer:1"))
		}
		var kept []byte
		for _, d := range r.got() {
			kept = append(kept, d...)
		}
		if s := c.Stats(); s.Dropped+s.Passed != 1000 {
			t.Errorf("seed %d: Stats() = %+v, want Dropped+Passed = 1000", seed, s)
		}
		return kept
	}
	a, b := run(7), run(7)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, same writes: different datagrams kept")
	}
	if n := len(a) / 2; n < 600 || n > 800 {
		t.Errorf("Drop 0.3 kept %d of 1000, want about 700", n)
	}
	if c := run(8); slices.Equal(a, c) {
		t.Errorf("seeds 7 and 8 kept the same datagrams")
	}
}

func TestDropAll(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	if err := c.SetFaults(Faults{Drop: 1}); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if n, err := c.WriteTo([]byte("x"), addr("peer:1")); n != 1 || err != nil {
			t.Fatalf("WriteTo of a dropped datagram = %d, %v, want 1, nil", n, err)
		}
	}
	if got := len(r.got()); got != 0 {
		t.Errorf("%d datagrams got through Drop 1", got)
	}
}

func TestDelayHoldsDatagrams(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	const delay = 40 * time.Millisecond
	if err := c.SetFaults(Faults{Delay: delay}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 5 {
		_, _ = c.WriteTo([]byte{byte(i)}, addr("peer:1"))
	}
	if got := len(r.got()); got != 0 && time.Since(start) < delay {
		t.Fatalf("%d datagrams written before the delay passed", got)
	}
	waitFor(t, "delayed datagrams", func() bool { return len(r.got()) == 5 })
	r.mu.Lock()
	first := r.at[0]
	r.mu.Unlock()
	if waited := first.Sub(start); waited < delay {
		t.Errorf("first datagram sent after %v, want at least %v", waited, delay)
	}
	for i, d := range r.got() {
		if d[0] != byte(i) {
			t.Errorf("datagram %d is %d: equal delays must keep order", i, d[0])
		}
	}
	if s := c.Stats(); s.Delayed != 5 {
		t.Errorf("Stats().Delayed = %d, want 5", s.Delayed)
	}
}

func TestReorderLetsLaterDatagramsOvertake(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 3)
	defer c.Close()
	if err := c.SetFaults(Faults{Reorder: 0.3, ReorderDelay: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		_, _ = c.WriteTo([]byte{byte(i)}, addr("peer:1"))
	}
	waitFor(t, "all datagrams", func() bool { return len(r.got()) == n })
	var order []int
	for _, d := range r.got() {
		order = append(order, int(d[0]))
	}
	if slices.IsSorted(order) {
		t.Errorf("Reorder 0.3 kept every datagram in order")
	}
	slices.Sort(order)
	for i, v := range order {
		if v != i {
			t.Fatalf("datagram %d lost or duplicated by reordering", i)
		}
	}
	if s := c.Stats(); s.Reordered == 0 || s.Reordered == n {
		t.Errorf("Stats().Reordered = %d of %d, want some but not all", s.Reordered, n)
	}
}

func TestBlockBothDirections(t *testing.T) {
	a, err := Listen("127.0.0.1:0", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Listen("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	recv := func(c *Conn) (string, bool) {
		buf := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return "", false
		}
		return string(buf[:n]), true
	}

	if _, err := a.WriteTo([]byte("hello"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got, ok := recv(b); !ok || got != "hello" {
		t.Fatalf("before Block: got %q, %v", got, ok)
	}

	a.Block(b.LocalAddr())
	_, _ = a.WriteTo([]byte("out"), b.LocalAddr())
	if got, ok := recv(b); ok {
		t.Errorf("a blocks b: b still received %q", got)
	}
	_, _ = b.WriteTo([]byte("in"), a.LocalAddr())
	if got, ok := recv(a); ok {
		t.Errorf("a blocks b: a still received %q from b", got)
	}
	if s := a.Stats(); s.BlockedOut != 1 || s.BlockedIn != 1 {
		t.Errorf("Stats() = %+v, want BlockedOut 1 and BlockedIn 1", s)
	}

	a.Unblock(b.LocalAddr())
	_, _ = a.WriteTo([]byte("again"), b.LocalAddr())
	if got, ok := recv(b); !ok || got != "again" {
		t.Errorf("after Unblock: got %q, %v, want \"again\"", got, ok)
	}

	// One way: a's datagrams to b are discarded, b's to a arrive.
	a.BlockOut(b.LocalAddr())
	_, _ = a.WriteTo([]byte("out"), b.LocalAddr())
	if got, ok := recv(b); ok {
		t.Errorf("a blocks its datagrams to b: b still received %q", got)
	}
	_, _ = b.WriteTo([]byte("in"), a.LocalAddr())
	if got, ok := recv(a); !ok || got != "in" {
		t.Errorf("a blocks only its datagrams to b: a got %q, %v from b, want \"in\"", got, ok)
	}
	if s := a.Stats(); s.BlockedOut != 2 || s.BlockedIn != 1 {
		t.Errorf("Stats() = %+v, want BlockedOut 2 and BlockedIn 1", s)
	}
}

func TestBlockAppliesToQueuedDatagrams(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	if err := c.SetFaults(Faults{Delay: 30 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	_, _ = c.WriteTo([]byte("x"), addr("peer:1"))
	c.Block(addr("peer:1"))
	waitFor(t, "the queued datagram to fall due", func() bool { return c.Stats().BlockedOut == 1 })
	if got := len(r.got()); got != 0 {
		t.Errorf("a datagram queued before Block was sent after it")
	}
}

func TestHealRestoresFastPath(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	_ = c.SetFaults(Faults{Drop: 1})
	c.Block(addr("x:1"))
	c.Heal()
	if c.state.Load() != nil {
		t.Fatalf("Heal left a fault state; the fast path is off")
	}
	_, _ = c.WriteTo([]byte("x"), addr("x:1"))
	if got := len(r.got()); got != 1 {
		t.Errorf("after Heal %d datagrams went through, want 1", got)
	}
	if f := c.Faults(); f != (Faults{}) {
		t.Errorf("Faults() after Heal = %+v, want zero", f)
	}
}

func TestCloseDiscardsQueueAndIsIdempotent(t *testing.T) {
	r := newRecorder()
	c := Wrap(r, 1)
	_ = c.SetFaults(Faults{Delay: time.Hour})
	_, _ = c.WriteTo([]byte("x"), addr("peer:1"))
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close() = %v", err)
	}
	if _, err := c.WriteTo([]byte("y"), addr("peer:1")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close = %v, want net.ErrClosed", err)
	}
	select {
	case <-r.closed:
	default:
		t.Errorf("Close did not close the wrapped conn")
	}
}

func TestValidate(t *testing.T) {
	bad := []Faults{
		{Drop: -0.1}, {Drop: 1.1}, {Reorder: 2}, {Delay: -1}, {Jitter: -1}, {ReorderDelay: -1},
	}
	for i, f := range bad {
		if err := f.Validate(); !errors.Is(err, ErrInvalidFaults) {
			t.Errorf("step %d: Validate(%+v) = %v, want ErrInvalidFaults", i, f, err)
		}
	}
	r := newRecorder()
	c := Wrap(r, 1)
	defer c.Close()
	if err := c.SetFaults(Faults{Drop: 5}); !errors.Is(err, ErrInvalidFaults) {
		t.Errorf("SetFaults(Drop 5) = %v, want ErrInvalidFaults", err)
	}
	if err := (Faults{Drop: 0.5, Delay: time.Millisecond, Jitter: time.Millisecond, Reorder: 1}).Validate(); err != nil {
		t.Errorf("Validate of a good Faults = %v", err)
	}
}

func BenchmarkWriteTo(b *testing.B) {
	dst, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	payload := make([]byte, 1200)
	for _, mode := range []string{"raw", "wrapped"} {
		b.Run(mode, func(b *testing.B) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var w net.PacketConn = pc
			if mode == "wrapped" {
				c := Wrap(pc, 1)
				defer c.Close()
				w = c
			} else {
				defer pc.Close()
			}
			to := dst.LocalAddr()
			b.ReportAllocs()
			for b.Loop() {
				_, _ = w.WriteTo(payload, to)
			}
		})
	}
}
