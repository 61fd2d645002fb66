package window

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/limits"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Fixed instants, as in golang.org/x/time/rate's tests. t0 starts a slot.
const d = int64(100 * time.Millisecond)

var (
	t0 = int64(1_700_000_000_000_000_000)
	t1 = t0 + 1*d
	t2 = t0 + 2*d
	t3 = t0 + 3*d
	t4 = t0 + 4*d
	t5 = t0 + 5*d
	t9 = t0 + 9*d
)

// ts prints an instant relative to t0.
func ts(t int64) string { return "t0+" + time.Duration(t-t0).String() }

type allow struct {
	t  int64
	n  int64
	ok bool
}

func run(t *testing.T, w *Window, allows []allow) {
	t.Helper()
	for i, a := range allows {
		if ok := w.AllowN(a.t, a.n); ok != a.ok {
			t.Errorf("step %d: AllowN(%v, %v) = %v, want %v", i, ts(a.t), a.n, ok, a.ok)
		}
	}
}

func mustNew(t testing.TB, rate string, now int64) *Window {
	t.Helper()
	w, err := New(limits.MustParseRate(rate), now)
	if err != nil {
		t.Fatalf("New(%v, %v) = %v", rate, ts(now), err)
	}
	return w
}

func checkCounts(t *testing.T, w *Window, now, admitted, offered int64) {
	t.Helper()
	if a, o := w.Counts(now); a != admitted || o != offered {
		t.Errorf("Counts(%v) = %v, %v, want %v, %v", ts(now), a, o, admitted, offered)
	}
}

func TestAllowNSimple(t *testing.T) {
	w := mustNew(t, "3/s", t0)
	run(t, w, []allow{
		{t0, 1, true},
		{t0, 1, true},
		{t0, 1, true},
		{t0, 1, false},
		{t9 + 99*int64(time.Millisecond), 1, false}, // still in slot 9: slot 0 is in the window
		{t0 + 10*d, 1, true},                        // slot 0 left the window
		{t0 + 10*d, 2, true},
		{t0 + 10*d, 1, false},
	})
	checkCounts(t, w, t0+10*d, 3, 5)
}

// TestAllowNSliding shows the window slides slot by slot rather than
// resetting every second.
func TestAllowNSliding(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	run(t, w, []allow{
		{t0, 4, true},
		{t5, 6, true},
		{t5, 1, false},
		{t9, 1, false},
		{t0 + 10*d, 4, true},  // the 4 of slot 0 expired, the 6 of slot 5 not
		{t0 + 10*d, 1, false}, // full again
		{t0 + 14*d, 1, false},
		{t0 + 15*d, 6, true}, // the 6 of slot 5 expired
		{t0 + 15*d, 1, false},
	})
}

func TestAllowNBadInput(t *testing.T) {
	w := mustNew(t, "5/s", t0)
	run(t, w, []allow{
		{t0, 0, true},
		{t0, -1, false},
		{t0, math.MinInt64, false},
		{t0, 6, false}, // above the count: never admissible
		{t0, math.MaxInt64, false},
		{t0, 5, true},
		{t0, 0, true}, // zero is allowed even when full
	})
	checkCounts(t, w, t0, 5, 5) // only the admitted 5 counted
}

// TestAllowNBackwards: a clock that steps back counts into the open slot;
// no slot reopens and slots expire later, not earlier.
func TestAllowNBackwards(t *testing.T) {
	w := mustNew(t, "4/s", t0)
	run(t, w, []allow{
		{t5, 2, true},
		{t1, 2, true}, // counted in slot 5, not slot 1
		{t1, 1, false},
		{t0 + 11*d, 1, false}, // slot 1 would have expired at slot 11; slot 5 holds all four
		{t0 + 15*d, 4, true},
	})
	if got := w.OpenEpoch(); got != EpochOf(t0+15*d) {
		t.Errorf("OpenEpoch() = %v, want %v", got, EpochOf(t0+15*d))
	}
}

// TestAllowNRingWraps is the trap of rings indexed by time modulo their
// length: a slot from a previous lap must never be counted again.
func TestAllowNRingWraps(t *testing.T) {
	for _, rate := range []string{"5/s", "5/100ms", "5/200ms", "5/min", "5/1.1s"} {
		r := limits.MustParseRate(rate)
		ring := int64(max(r.Slots(), minRing))
		w := mustNew(t, rate, t0)
		steps := []allow{
			{t0, 5, true},
			{t0 + ring*d, 5, true}, // exactly one lap later: same position, other epoch
			{t0 + ring*d, 1, false},
			{t0 + 2*ring*d - d, 1, false}, // the lap-1 slot is still in a 60 s window... or not
		}
		// In the last step the slot of t0+ring*d is in the window only if
		// ring−1 < K, i.e. never for windows of at most 11 slots.
		steps[3].ok = int64(r.Slots()) < ring
		t.Run(rate, func(t *testing.T) { run(t, w, steps) })
		if a, o := w.Counts(t0 + 3*ring*d); a != 0 || o != 0 {
			t.Errorf("%s: Counts(%v) = %v, %v three laps later, want 0, 0", rate, ts(t0+3*ring*d), a, o)
		}
	}
}

func TestDecide(t *testing.T) {
	w := mustNew(t, "2/s", t0)
	ms := int64(time.Millisecond)
	steps := []struct {
		t    int64
		n    int64
		want Decision
	}{
		{t0 + 50*ms, 1, Decision{Allowed: true, Remaining: 1}},
		{t3 + 50*ms, 1, Decision{Allowed: true, Remaining: 0}},
		{t4, 1, Decision{Remaining: 0, RetryAfter: 600 * time.Millisecond}}, // slot 0 leaves at t0+1s
		{t0 + 10*d, 1, Decision{Allowed: true, Remaining: 0}},
		{t0 + 11*d, 1, Decision{RetryAfter: 200 * time.Millisecond}}, // slot 3 leaves at t0+1.3s
		{t0 + 11*d, 3, Decision{RetryAfter: Never}},                  // above the limit
		{t0 + 11*d, -1, Decision{RetryAfter: Never}},
		{t0 + 11*d, 0, Decision{Allowed: true}},
	}
	for i, s := range steps {
		s.want.Limit = limits.MustParseRate("2/s")
		if got := w.Decide(s.t, s.n); got != s.want {
			t.Errorf("step %d: Decide(%v, %v) = %+v, want %+v", i, ts(s.t), s.n, got, s.want)
		}
	}
}

func TestDecideRetryAfterQuotaOnly(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	w.SetQuota(0)
	now := t0 + 30*int64(time.Millisecond)
	want := Decision{Limit: limits.MustParseRate("10/s"), RetryAfter: 70 * time.Millisecond}
	if got := w.Decide(now, 1); got != want {
		t.Errorf("Decide(%v, 1) with quota 0 = %+v, want %+v (the next slot edge)", ts(now), got, want)
	}
}

func TestTakeUpTo(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	steps := []struct {
		t, max, want int64
	}{
		{t0, 4, 4},
		{t0, 0, 0},
		{t0, -3, 0},
		{t1, 4, 4},
		{t2, 4, 2}, // partial
		{t2, 4, 0},
		{t0 + 10*d, 50, 4}, // max clamped to the count; slot 0's 4 expired
	}
	for i, s := range steps {
		if got := w.takeUpTo(s.t, s.max); got != s.want {
			t.Errorf("step %d: takeUpTo(%v, %v) = %v, want %v", i, ts(s.t), s.max, got, s.want)
		}
	}
	// Offered: 4+4+4+4 (t0..t2) leave slot 0 with 4; plus 10 (clamped) now.
	checkCounts(t, w, t0+10*d, 10, 4+4+4+10)
}

func TestRefund(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	run(t, w, []allow{{t0, 3, true}, {t2, 4, true}, {t5, 3, true}})
	steps := []struct {
		now, at, n, want int64
	}{
		{t5, t5, 1, 1},            // the open slot
		{t5, t2, 10, 4},           // a closed slot: never more than it admitted
		{t5, t2, 1, 0},            // nothing left there
		{t5, t0 + 10*d, 1, 0},     // a slot not yet open
		{t5, t0, 0, 0},            // n == 0
		{t5, t0, -2, 0},           // n < 0
		{t0 + 10*d, t0, 3, 0},     // slot 0 left the window
		{t0 + 10*d, t5, 1, 1},     // still in the window
		{t0 + 10*d, t5 + 1, 5, 1}, // same slot, one left
	}
	for i, s := range steps {
		if got := w.Refund(s.now, s.at, s.n); got != s.want {
			t.Errorf("step %d: Refund(%v, %v, %v) = %v, want %v", i, ts(s.now), ts(s.at), s.n, got, s.want)
		}
	}
	checkCounts(t, w, t0+10*d, 0, 4+3)
	if got := w.Total(); got != 0 {
		t.Errorf("Total() = %v, want 0", got)
	}
	run(t, w, []allow{{t0 + 10*d, 10, true}})
}

func TestSetRate(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	run(t, w, []allow{{t0, 8, true}})
	if err := w.SetRate(limits.MustParseRate("5/s")); err != nil {
		t.Fatalf("SetRate(5/s) = %v", err)
	}
	if got := w.Quota(); got != 5 {
		t.Errorf("after SetRate(5/s): Quota() = %v, want 5 (it followed the count)", got)
	}
	run(t, w, []allow{{t1, 1, false}})
	if err := w.SetRate(limits.MustParseRate("20/s")); err != nil {
		t.Fatalf("SetRate(20/s) = %v", err)
	}
	run(t, w, []allow{{t1, 12, true}, {t1, 1, false}})
	checkCounts(t, w, t1, 20, 22)

	w.SetQuota(7) // a share: no longer follows the count, but never exceeds it
	if err := w.SetRate(limits.MustParseRate("30/s")); err != nil || w.Quota() != 7 {
		t.Errorf("SetRate(30/s) with quota 7 = %v, quota %v; want nil, 7", err, w.Quota())
	}
	if err := w.SetRate(limits.MustParseRate("6/s")); err != nil || w.Quota() != 6 {
		t.Errorf("SetRate(6/s) with quota 7 = %v, quota %v; want nil, 6", err, w.Quota())
	}

	err := w.SetRate(limits.MustParseRate("10/2s"))
	if !errors.Is(err, ErrWindowChanged) || !strings.Contains(err.Error(), "2s") {
		t.Errorf("SetRate(10/2s) = %v, want ErrWindowChanged naming 2s", err)
	}
	if err := w.SetRate(limits.Rate{Count: 0, Window: time.Second}); !errors.Is(err, limits.ErrInvalidRate) {
		t.Errorf("SetRate(0/s) = %v, want limits.ErrInvalidRate", err)
	}
	if got := w.Rate(); got != limits.MustParseRate("6/s") {
		t.Errorf("Rate() = %v after failed changes, want 6/s", got)
	}
}

func TestSetQuota(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	for i, s := range []struct{ set, want int64 }{
		{3, 3}, {-1, 0}, {math.MaxInt64, limits.MaxCount}, {10, 10}, {11, 11},
	} {
		w.SetQuota(s.set)
		if got := w.Quota(); got != s.want {
			t.Errorf("step %d: SetQuota(%v); Quota() = %v, want %v", i, s.set, got, s.want)
		}
	}
	w.SetQuota(2)
	run(t, w, []allow{{t0, 2, true}, {t0, 1, false}})
	w.SetQuota(1) // below what the window holds: deny until slots expire
	run(t, w, []allow{{t1, 1, false}, {t0 + 10*d, 1, true}})
}

func TestReset(t *testing.T) {
	w := mustNew(t, "10/s", t0)
	run(t, w, []allow{{t0, 4, true}, {t3, 6, true}, {t3, 1, false}})
	w.Reset()
	checkCounts(t, w, t3, 0, 0)
	if got := w.Total(); got != 0 {
		t.Errorf("Total() after Reset = %v, want 0", got)
	}
	run(t, w, []allow{{t3, 10, true}, {t4, 1, false}, {t0 + 13*d, 10, true}})
}

func TestSlots(t *testing.T) {
	w := mustNew(t, "100/s", t0)
	run(t, w, []allow{{t0, 1, true}, {t2, 2, true}, {t2, 200, false}, {t5, 5, true}})
	w.RecordOffered(t5, 7)
	type slot struct {
		epoch    int64
		adm, off uint32
	}
	e0 := EpochOf(t0)
	tests := []struct {
		now, from int64
		want      []slot
	}{
		{t5, 0, []slot{{e0, 1, 1}, {e0 + 2, 2, 2}, {e0 + 5, 5, 12}}},
		{t5, e0 + 1, []slot{{e0 + 2, 2, 2}, {e0 + 5, 5, 12}}},
		{t0 + 10*d, 0, []slot{{e0 + 2, 2, 2}, {e0 + 5, 5, 12}}}, // slot 0 left
		{t0 + 15*d, 0, nil},
		{t1, 0, []slot{{e0, 1, 1}, {e0 + 2, 2, 2}, {e0 + 5, 5, 12}}}, // before the open slot: read as of it
	}
	for i, tt := range tests {
		var got []slot
		w.Slots(tt.now, tt.from, func(e int64, a, o uint32) { got = append(got, slot{e, a, o}) })
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("step %d: Slots(%v, %v) = %v, want %v", i, ts(tt.now), tt.from, got, tt.want)
		}
	}
	// Demand counts closed slots only.
	for i, tt := range []struct {
		now   int64
		slots int
		want  int64
	}{
		{t5, 5, 3}, {t5, 3, 2}, {t5, 10, 3}, {t5 + d, 1, 12}, {t5 + d, 0, 0}, {t5 + d, -1, 0}, {t5 + d, math.MaxInt, 15},
	} {
		if got := w.Demand(tt.now, tt.slots); got != tt.want {
			t.Errorf("step %d: Demand(%v, %v) = %v, want %v", i, ts(tt.now), tt.slots, got, tt.want)
		}
	}
}

func TestCurrentQPS(t *testing.T) {
	for _, rate := range []string{"1000000/s", "1000000/min", "1000000/30s"} {
		w := mustNew(t, rate, t0)
		// 20 requests per slot for 70 s, all admitted.
		for x := range int64(700) {
			for range 20 {
				w.Allow(t0 + x*d)
			}
		}
		now := t0 + 700*d
		q := w.CurrentQPS(now)
		if q.LastSecond != (Throughput{200, 200}) {
			t.Errorf("%s: CurrentQPS(%v).LastSecond = %+v, want {200 200}", rate, ts(now), q.LastSecond)
		}
		if math.Abs(q.LastMinute.Admitted-200) > 1e-9 || math.Abs(q.LastMinute.Offered-200) > 1e-9 {
			t.Errorf("%s: CurrentQPS(%v).LastMinute = %+v, want {200 200}", rate, ts(now), q.LastMinute)
		}
		// Half a minute later with no traffic: the minute is half empty.
		later := now + 300*d
		if q := w.CurrentQPS(later); q.LastSecond != (Throughput{}) || math.Abs(q.LastMinute.Admitted-100) > 2 {
			t.Errorf("%s: CurrentQPS(%v) = %+v, want nothing last second and about 100/s over the minute", rate, ts(later), q)
		}
	}
}

func TestNewInvalidRate(t *testing.T) {
	for _, r := range []limits.Rate{{}, {Count: 1, Window: 50 * time.Millisecond}, {Count: -1, Window: time.Second}, {Count: 1, Window: time.Hour}} {
		if w, err := New(r, t0); !errors.Is(err, limits.ErrInvalidRate) || w != nil {
			t.Errorf("New(%+v) = %v, %v; want nil, limits.ErrInvalidRate", r, w, err)
		}
	}
}

// TestExtremeTimes: no time may panic or overflow.
func TestExtremeTimes(t *testing.T) {
	times := []int64{math.MinInt64, math.MinInt64 + 1, -1, 0, 1, math.MaxInt64 - 1, math.MaxInt64}
	for _, rate := range []string{"3/100ms", "3/s", "3/min"} {
		for _, start := range times {
			w := mustNew(t, rate, start)
			for _, now := range times {
				w.AllowN(now, 1)
				dec := w.Decide(now, 2)
				if dec.RetryAfter < 0 {
					t.Errorf("%s: Decide(%v, 2).RetryAfter = %v, want >= 0", rate, now, dec.RetryAfter)
				}
				w.takeUpTo(now, 2)
				w.RecordOffered(now, math.MaxInt64)
				w.Refund(now, now, 1)
				w.Refund(now, math.MinInt64, 1)
				w.Counts(now)
				w.Slots(now, math.MinInt64, func(int64, uint32, uint32) {})
				w.Demand(now, math.MaxInt)
				w.CurrentQPS(now)
				if w.Total() < 0 {
					t.Fatalf("%s: Total() = %v after ops at %v, want >= 0", rate, w.Total(), now)
				}
			}
		}
	}
}

// TestShardsInflate: a hot window gets per-P counters and keeps counting
// exactly across the switch.
func TestShardsInflate(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	w := mustNew(t, "1000000/s", t0)
	for range inflateAt {
		w.Allow(t0)
	}
	if w.shards.Load() != nil {
		t.Fatalf("window has shards before its first roll")
	}
	for range 10 {
		w.Allow(t1)
	}
	s := w.shards.Load()
	if s == nil || len(s.s) != 4 {
		t.Fatalf("after a slot of %d requests: shards = %v, want 4", inflateAt, s)
	}
	cold := mustNew(t, "1000000/s", t0)
	if got, hot := cold.sizeBytes(), w.sizeBytes(); hot <= got {
		t.Errorf("sizeBytes() hot 1 s window = %v, cold = %v; want the shards counted", hot, got)
	}
	for range 10 {
		w.Allow(t1)
	}
	checkCounts(t, w, t1, inflateAt+20, inflateAt+20)
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	w := mustNew(t, "1000/s", t0)
	now := t0
	tests := map[string]func(){
		"AllowN":        func() { now += 1e5; w.AllowN(now, 1) },
		"Decide":        func() { now += 1e5; w.Decide(now, 1) },
		"takeUpTo":      func() { now += 1e5; w.takeUpTo(now, 2) },
		"RecordOffered": func() { now += 1e5; w.RecordOffered(now, 2) },
		"Counts":        func() { w.Counts(now) },
		"Slots":         func() { w.Slots(now, 0, func(int64, uint32, uint32) {}) },
		"CurrentQPS":    func() { w.CurrentQPS(now) },
	}
	for name, f := range tests {
		if got := testing.AllocsPerRun(1000, f); got != 0 {
			t.Errorf("%s allocates %v times per call, want 0", name, got)
		}
	}
}

// TestSizeBytes: a window is its header while its slots fit the sparse
// words, whatever its length; one with requests in every slot holds a ring
// of two bytes a slot while its counts stay under 256 (and a second ring
// for the minute if it is shorter than one), four under 65,536, besides
// its shards once hot.
func TestSizeBytes(t *testing.T) {
	const header = int(unsafe.Sizeof(Window{}))
	if header > 176 {
		t.Errorf("window header is %d bytes, want at most 176", header)
	}
	const rings = int(unsafe.Sizeof(rings{}) + unsafe.Sizeof(ring{}))
	for _, tt := range []struct {
		rate       string
		perSlot    int64 // requests in every slot
		dense, max int
	}{
		{"10/100ms", 0, 0, header},
		{"10/s", 0, 0, header},
		{"600/min", 0, 0, header},
		{"1000/s", 50, 11, header + rings + 2*16 + 480},
		{"60000/min", 50, 600, header + rings + 2*600},
		{"6000000/min", 5000, 600, header + rings + 4*600},
	} {
		w := mustNew(t, tt.rate, t0)
		// A cold key: a request now and then, five slots in its minute.
		for i := range int64(5) {
			w.AllowN(t0+i*7*slotNs, 1)
		}
		if got := w.sizeBytes(); got != header {
			t.Errorf("%s after a few requests: sizeBytes() = %v, want the header's %v", tt.rate, got, header)
		}
		if tt.perSlot == 0 {
			continue
		}
		w = mustNew(t, tt.rate, t0)
		for i := range int64(2 * limits.MaxSlots) {
			w.AllowN(t0+i*slotNs, tt.perSlot)
		}
		shards := 0
		if ss := w.shards.Load(); ss != nil {
			shards = int(unsafe.Sizeof(shardSet{})) + len(ss.s)*int(unsafe.Sizeof(shard{}))
		}
		if got := w.sizeBytes() - shards; got > tt.max || w.denseRing() == nil {
			t.Errorf("%s with %d requests in every slot: sizeBytes() = %v (dense %v), want at most %v", tt.rate, tt.perSlot, got, w.denseRing() != nil, tt.max)
		}
	}
}

func TestEpochOf(t *testing.T) {
	for _, tt := range []struct{ now, want int64 }{
		{0, 0}, {d - 1, 0}, {d, 1}, {-1, -1}, {-d, -1}, {-d - 1, -2},
		{math.MaxInt64, math.MaxInt64 / d}, {math.MinInt64, math.MinInt64/d - 1},
	} {
		if got := EpochOf(tt.now); got != tt.want {
			t.Errorf("EpochOf(%v) = %v, want %v", tt.now, got, tt.want)
		}
	}
}

// TestQuotaUntil: a quota with a validity admits through its last epoch and
// denies after it, until it is set again; SetQuota never expires.
func TestQuotaUntil(t *testing.T) {
	w := mustNew(t, "100/s", t0)
	e := EpochOf(t0)
	w.SetQuotaUntil(50, e+2)
	steps := []struct {
		at   int64
		n    int64
		want bool
	}{
		{t0, 10, true},
		{t0 + 2*slotNs, 10, true},  // epoch e+2: still valid
		{t0 + 3*slotNs, 1, false},  // e+3: expired
		{t0 + 50*slotNs, 1, false}, // long after
	}
	for i, st := range steps {
		if got := w.AllowN(st.at, st.n); got != st.want {
			t.Errorf("step %d: AllowN(%v, %d) = %v, want %v", i, st.at, st.n, got, st.want)
		}
	}
	if _, off := w.Counts(t0 + 50*slotNs); off < 1 {
		t.Errorf("denials of an expired quota were not counted as offered (offered %d)", off)
	}
	w.SetQuota(50)
	if !w.AllowN(t0+60*slotNs, 1) {
		t.Error("AllowN after SetQuota = false, want true (SetQuota never expires)")
	}
	if got := w.quotaUntil.Load(); got != math.MaxInt64 {
		t.Errorf("quotaUntil after SetQuota = %d, want MaxInt64", got)
	}
}
