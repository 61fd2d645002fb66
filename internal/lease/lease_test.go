package lease

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

const ms = int64(time.Millisecond)

var rate = limits.MustParseRate("1000/s")

// warmUp makes k warm with calls every 5 ms (200/s, 20 per 100 ms TTL),
// each a decision the node allows, and returns the time after them.
func warmUp(t *testing.T, k *Key, now int64) int64 {
	t.Helper()
	for i := 0; !k.Warm(); i++ {
		if i > 100 {
			t.Fatalf("key not warm after %d calls; rate %.1f/s", i, k.Rate())
		}
		if v, _, _ := k.Take(now, 1); v != Ask {
			t.Fatalf("cold key: Take = %v, want ask", v)
		}
		r := k.Decide(now, 1, "n1")
		if k.Warm() {
			if r.Want == 0 {
				t.Fatalf("the decision that warmed the key asks no lease: %+v", r)
			}
			return now
		}
		if r.Want != 0 {
			t.Fatalf("cold key's decision asks a lease: %+v", r)
		}
		k.Apply(now+ms/10, now, r, &Reply{Node: "n1", Allowed: true, Limit: rate})
		now += 5 * ms
	}
	return now
}

func TestColdKeyAsksEveryCall(t *testing.T) {
	k := NewKey(Config{}, 0)
	now := int64(0)
	for i := range 20 { // 10/s: far below a lease's worth per TTL
		if v, _, _ := k.Take(now, 1); v != Ask {
			t.Fatalf("step %d: Take = %v, want ask", i, v)
		}
		r := k.Decide(now, 1, "n1")
		if r.N != 1 || r.Want != 0 || r.Settle.ID != 0 {
			t.Fatalf("step %d: Decide = %+v, want a plain decision of 1", i, r)
		}
		k.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, Limit: rate})
		if p, _ := k.Plan(now+ms, "n1"); !p.Empty() {
			t.Fatalf("step %d: Plan = %+v for a cold key, want nothing", i, p)
		}
		now += 100 * ms
	}
	if k.Warm() {
		t.Fatalf("a key at 10/s became warm (rate %.1f/s)", k.Rate())
	}
}

func TestLeaseRidesOnDecisionAndIsRenewedAhead(t *testing.T) {
	k := NewKey(Config{}, 0)
	now := warmUp(t, k, 0)
	// The warming decision went out with a lease request; answer it.
	r := Request{N: 1, Want: 20}
	k.renewing = true
	k.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, LeaseID: 7, Granted: 20, TTL: 150 * time.Millisecond, Limit: rate})
	l := k.Current()
	if l == nil || l.Granted != 20 || l.Expires != now+int64(DefaultTTL) {
		t.Fatalf("lease = %+v, want 20 tokens until sent+TTL (the SDK's TTL, shorter than the node's)", l)
	}
	// Calls are local now.
	for i := range 14 {
		if v, left, _ := k.Take(now+2*ms, 1); v != Admit || left != int64(19-i) {
			t.Fatalf("call %d: Take = %v, %d left", i, v, left)
		}
	}
	if p, _ := k.Plan(now+2*ms, "n1"); p.Want != 0 {
		t.Fatalf("Plan with 6 of 20 left = %+v, want no renewal yet", p)
	}
	k.Take(now+3*ms, 1) // 5 left: a quarter
	p, _ := k.Plan(now+3*ms, "n1")
	if p.Want == 0 || p.Settle.ID != 0 {
		t.Fatalf("Plan with a quarter left = %+v, want a renewal and no settlement yet", p)
	}
	// While it is out, the old lease still serves.
	if v, _, _ := k.Take(now+4*ms, 1); v != Admit {
		t.Fatalf("Take during the renewal = %v, want admit from the old lease", v)
	}
	if q, _ := k.Plan(now+4*ms, "n1"); q.Want != 0 {
		t.Fatalf("a second renewal while one is out: %+v", q)
	}
	k.Apply(now+5*ms, now+3*ms, p, &Reply{Node: "n1", LeaseID: 8, Granted: 30, Limit: rate})
	if c := k.Current(); c == nil || c.ID != 8 || c.Tokens() != 30 {
		t.Fatalf("after the renewal: lease %+v, want lease 8 with 30 tokens", c)
	}
	// The old lease used 16 of 20: settled with the next request to n1.
	q, _ := k.Plan(now+5*ms, "n1")
	if q.Settle != (Settle{Node: "n1", ID: 7, Used: 16}) {
		t.Fatalf("settlement = %+v, want lease 7 used 16", q.Settle)
	}
}

func TestExpiredLeaseIsSettledAndKeyCoolsDown(t *testing.T) {
	k := NewKey(Config{}, 0)
	now := warmUp(t, k, 0)
	r := Request{N: 1, Want: 20}
	k.renewing = true
	k.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, LeaseID: 3, Granted: 20, Limit: rate})
	k.Take(now+2*ms, 3)
	// No more calls: the lease expires, is settled, and the key goes cold.
	later := now + int64(DefaultTTL) + ms
	p, _ := k.Plan(later, "n1")
	if p.Settle != (Settle{Node: "n1", ID: 3, Used: 3}) {
		t.Fatalf("Plan after expiry = %+v, want lease 3 settled with 3 used", p)
	}
	if v, _, _ := k.Take(later, 1); v != Ask {
		t.Fatalf("Take after expiry = %v, want ask", v)
	}
	for now = later; k.Warm(); now += 50 * ms {
		k.Plan(now, "n1")
		if now > later+int64(2*time.Second) {
			t.Fatalf("key still warm 2 s after its calls stopped (rate %.2f/s)", k.Rate())
		}
	}
	if _, forget := k.Plan(now+int64(DefaultForgetAfter), "n1"); !forget {
		t.Fatalf("idle key with nothing held or owed is not forgotten")
	}
}

func TestNoRoomDeniesLocallyUntilRetry(t *testing.T) {
	// A cold key's calls keep going to the node: no local denial.
	c := NewKey(Config{}, 0)
	c.Apply(ms, 0, c.Decide(0, 1, "n1"), &Reply{Node: "n1", NoRoom: true, RetryAfter: 7 * time.Millisecond, Limit: rate})
	if v, _, _ := c.Take(2*ms, 1); v != Ask {
		t.Fatalf("cold key: Take after no room = %v, want ask", v)
	}
	// A warm key's are denied locally until the node said room may come.
	k := NewKey(Config{}, 0)
	k.warm = true
	r := k.Decide(0, 1, "n1")
	k.Apply(ms, 0, r, &Reply{Node: "n1", NoRoom: true, RetryAfter: 7 * time.Millisecond, Limit: rate})
	if v, _, retry := k.Take(2*ms, 2); v != Deny || retry != 6*time.Millisecond {
		t.Fatalf("Take after no room = %v, retry %v, want deny for 6ms", v, retry)
	}
	if v, _, _ := k.Take(8*ms, 1); v != Ask {
		t.Fatalf("Take after the retry time = %v, want ask", v)
	}
	// Local denials are reported as offered demand.
	if p := k.Decide(8*ms, 1, "n1"); p.Offered != 2 {
		t.Fatalf("Offered = %d, want the 2 calls denied locally", p.Offered)
	}
	// A retry hint is clamped.
	k.warm = true
	k.Apply(9*ms, 8*ms, Request{N: 1}, &Reply{Node: "n1", NoRoom: true, RetryAfter: time.Hour})
	if du := k.denyUntil.Load(); du != 9*ms+int64(DefaultMaxDeny) {
		t.Fatalf("deny until %d, want clamped to %d", du, 9*ms+int64(DefaultMaxDeny))
	}
}

func TestSettlementsGoToTheGrantingNode(t *testing.T) {
	k := NewKey(Config{}, 0)
	now := warmUp(t, k, 0)
	k.renewing = true
	k.Apply(now+ms, now, Request{Want: 20}, &Reply{Node: "n1", LeaseID: 1, Granted: 20})
	k.Take(now+ms, 5)
	k.renewing = true
	k.Apply(now+2*ms, now+ms, Request{Want: 20}, &Reply{Node: "n2", LeaseID: 9, Granted: 20}) // home moved to n2
	if r := k.Decide(now+3*ms, 1, "n2"); r.Settle.ID != 0 {
		t.Fatalf("settlement of n1's lease sent to n2: %+v", r.Settle)
	}
	if s := k.TakeOwed("n1"); s != (Settle{Node: "n1", ID: 1, Used: 5}) {
		t.Fatalf("TakeOwed(n1) = %+v, want lease 1 used 5", s)
	}
	k.DropOwed("n2")
	if len(k.Owed()) != 0 {
		t.Fatalf("owed after taking and dropping: %+v", k.Owed())
	}
}

func TestLateGrantIsSettledUnused(t *testing.T) {
	k := NewKey(Config{}, 0)
	k.renewing = true
	k.Apply(int64(DefaultTTL)+ms, 0, Request{Want: 10}, &Reply{Node: "n1", LeaseID: 4, Granted: 10})
	if k.Current() != nil {
		t.Fatalf("a lease that arrived after its expiry was installed")
	}
	if s := k.TakeOwed("n1"); s != (Settle{Node: "n1", ID: 4}) {
		t.Fatalf("owed = %+v, want lease 4 settled unused", s)
	}
}

func TestFailedRenewalCanBeRetried(t *testing.T) {
	k := NewKey(Config{}, 0)
	now := warmUp(t, k, 0)
	r := k.Decide(now, 1, "n1")
	if r.Want != 0 {
		// warmUp's last decision already asked; this one must not
		t.Fatalf("second decision asks a lease while one is out: %+v", r)
	}
	k.Apply(now+ms, now, Request{Want: 20}, nil) // the lease request failed
	if q := k.Decide(now+2*ms, 1, "n1"); q.Want == 0 {
		t.Fatalf("the next decision after a failed lease request asks none: %+v", q)
	}
}

// Concurrent callers never take more tokens than a lease holds.
func TestTakeIsExactUnderConcurrency(t *testing.T) {
	k := NewKey(Config{}, 0)
	k.Apply(ms, 0, Request{Want: 1000}, &Reply{Node: "n1", LeaseID: 1, Granted: 1000})
	var wg sync.WaitGroup
	admitted := make([]int64, 8)
	for g := range admitted {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				if v, _, _ := k.Take(2*ms, 1); v == Admit {
					admitted[g]++
				}
			}
		}()
	}
	wg.Wait()
	var sum int64
	for _, a := range admitted {
		sum += a
	}
	if sum != 1000 || k.Current().Tokens() != 0 {
		t.Fatalf("admitted %d, %d tokens left, want exactly 1000 and 0", sum, k.Current().Tokens())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []Config{
		{TTL: time.Microsecond},
		{WarmTokens: 2, ColdTokens: 3},
		{MinDeny: 5 * time.Millisecond, MaxDeny: time.Millisecond},
		{TTL: time.Second, ForgetAfter: time.Millisecond},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
}

// A node that grants shorter leases than the SDK asks for: renewals follow
// the lease's own TTL, not the SDK's.
func TestShorterNodeTTLIsRenewedOnItsOwnClock(t *testing.T) {
	k := NewKey(Config{TTL: 100 * time.Millisecond}, 0)
	now := warmUp(t, k, 0)
	k.renewing = true
	k.Apply(now+ms, now, Request{Want: 20}, &Reply{Node: "n1", LeaseID: 1, Granted: 20, TTL: 40 * time.Millisecond})
	k.Take(now+ms, 1)
	if p, _ := k.Plan(now+5*ms, "n1"); p.Want != 0 {
		t.Fatalf("renewal 5 ms into a 40 ms lease with 19 of 20 left: %+v", p)
	}
	if p, _ := k.Plan(now+21*ms, "n1"); p.Want == 0 {
		t.Fatalf("no renewal past half of a 40 ms lease: %+v", p)
	}
}

// NoRoom: a denied decision, or a lease cut short with nothing remaining,
// says the node has no room; a short lease with room left, or an allowed
// decision, does not.
func TestRequestNoRoom(t *testing.T) {
	for i, tc := range []struct {
		req                Request
		allowed            bool
		granted, remaining int64
		want               bool
	}{
		{Request{N: 1}, true, 0, 5, false},
		{Request{N: 1}, false, 0, 5, true},
		{Request{N: 1, Want: 8}, true, 8, 0, false},
		{Request{N: 1, Want: 8}, true, 3, 0, true},
		{Request{N: 1, Want: 8}, true, 3, 2, false},
		{Request{Want: 8}, true, 0, 0, true},
		{Request{Settle: Settle{ID: 1}}, true, 0, 0, false},
	} {
		if got := tc.req.NoRoom(tc.allowed, tc.granted, tc.remaining); got != tc.want {
			t.Errorf("step %d: %+v.NoRoom(%v, %d, %d) = %v, want %v", i, tc.req, tc.allowed, tc.granted, tc.remaining, got, tc.want)
		}
	}
}

// TestFarLeaseFollowsTheRoom: a warm key's lease holds a FarTTL's calls
// while the node's room is at least 7/8 of the key's limit, at most
// 1/FarShare of the room, and is a Horizon's lease otherwise; a far lease
// is used for FarTTL, capped by the node's TTL.
func TestFarLeaseFollowsTheRoom(t *testing.T) {
	steps := []struct {
		name    string
		rate    float64 // calls per second
		room    int64   // the node's Remaining in its last answer
		limit   int64   // the key's limit in that answer
		want    int64
		ttl     time.Duration
		nodeTTL time.Duration // the node's TTL in the answer granting it
		usedFor time.Duration // how long the SDK then uses it
	}{
		{"no answer yet", 200, 0, 0, 4, DefaultTTL, 500 * time.Millisecond, DefaultTTL},
		{"room for many far leases", 200, 1_000_000, 1_000_000, 100, DefaultFarTTL, 500 * time.Millisecond, DefaultFarTTL},
		{"the node's TTL caps a far lease", 200, 1_000_000, 1_000_000, 100, DefaultFarTTL, 100 * time.Millisecond, 100 * time.Millisecond},
		{"an eighth of the room", 200, 400, 450, 50, DefaultFarTTL, 500 * time.Millisecond, DefaultFarTTL},
		{"room under seven eighths of the limit", 200, 400, 1000, 4, DefaultTTL, 500 * time.Millisecond, DefaultTTL},
		{"room under eight near leases", 200, 31, 40, 4, DefaultTTL, 500 * time.Millisecond, DefaultTTL},
		{"a fast key's near lease", 10_000, 799, 1598, 100, DefaultTTL, 500 * time.Millisecond, DefaultTTL},
		{"a fast key far from its limit", 10_000, 1_000_000, 1_000_000, 5000, DefaultFarTTL, 500 * time.Millisecond, DefaultFarTTL},
		{"denied: no room", 200, 0, 1000, 4, DefaultTTL, 0, DefaultTTL},
		{"unlimited", 200, 0, 0, 4, DefaultTTL, 0, DefaultTTL},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			k := NewWarmKey(Config{}, 0)
			k.rate, k.room, k.limit = s.rate, s.room, s.limit
			w, ttl := k.want()
			if w != s.want || ttl != s.ttl {
				t.Fatalf("want() = %d tokens for %v, want %d for %v", w, ttl, s.want, s.ttl)
			}
			now := int64(0) // no time has passed: the rate stays as set
			r := k.Decide(now, 1, "n1")
			if r.Want != s.want || r.TTL != s.ttl {
				t.Fatalf("Decide = %+v, want a lease of %d for %v", r, s.want, s.ttl)
			}
			k.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, LeaseID: 1, Granted: r.Want, TTL: s.nodeTTL, Limit: rate, Remaining: s.room})
			l := k.Current()
			if l == nil || l.Expires != now+int64(s.usedFor) {
				t.Fatalf("lease %+v, want one used until sent+%v", l, s.usedFor)
			}
		})
	}
}

// TestFarLeaseShrinksWithTheRoom: the answers' Remaining drives the next
// lease's size, renewal after renewal, down to a Horizon's lease and back.
func TestFarLeaseShrinksWithTheRoom(t *testing.T) {
	now := int64(time.Second)
	k := NewWarmKey(Config{}, now)
	k.rate = 1000
	id, prev := uint64(0), int64(0) // prev: the room the last answer gave
	for i, room := range []int64{1_000_000, 1_000_000, 2000, 400, 0, 100, 1_000_000} {
		r := k.Decide(now, 1, "n1")
		near := max(int64(4), int64(math.Ceil(k.Rate()*0.01)))
		if top := max(prev/DefaultFarShare, near); r.Want > top {
			t.Fatalf("step %d: lease of %d after a room of %d, want at most %d", i, r.Want, prev, top)
		}
		wantFar := prev*8 >= rate.Count*7 && prev/DefaultFarShare > near
		if far := r.Want > near; far != (r.TTL == DefaultFarTTL) || far != wantFar {
			t.Fatalf("step %d: lease of %d for %v after a room of %d (a Horizon's lease: %d)", i, r.Want, r.TTL, prev, near)
		}
		prev = room
		id++
		k.Apply(now+ms, now, r, &Reply{Node: "n1", Allowed: true, LeaseID: id, Granted: r.Want, TTL: 500 * time.Millisecond, Limit: rate, Remaining: room})
		k.Release()
		now += 2 * ms
	}
}

// TestWarmKeySurvivesAStall: far from its limit, a caller that stops for
// less than ColdAfter (a busy machine, a pause) finds its key still warm,
// its first call after the stall asking for a lease, and a key slow for
// ColdAfter goes cold; near its limit a key goes cold as soon as its rate
// falls below ColdTokens per TTL.
func TestWarmKeySurvivesAStall(t *testing.T) {
	for _, tc := range []struct {
		name  string
		room  int64 // the last answer's Remaining, of a 1000/s limit
		steps []struct {
			after time.Duration // since the previous step, no calls
			warm  bool
		}
	}{
		{"far", 900, []struct {
			after time.Duration
			warm  bool
		}{
			{200 * time.Millisecond, true},  // from 80/s to 30/s
			{600 * time.Millisecond, true},  // 1.5/s: below 4/s, the clock starts
			{900 * time.Millisecond, true},  // 0.9 s below
			{200 * time.Millisecond, false}, // 1.1 s below: cold
		}},
		{"near", 100, []struct {
			after time.Duration
			warm  bool
		}{
			{200 * time.Millisecond, true},  // 30/s: above 20/s
			{400 * time.Millisecond, false}, // 4/s: cold at once
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := NewKey(Config{}, 0)
			now := warmUp(t, k, 0)
			k.room, k.limit = tc.room, rate.Count
			for i, s := range tc.steps {
				now += int64(s.after)
				k.Plan(now, "n1")
				if k.Warm() != s.warm {
					t.Fatalf("step %d, %v later: warm %v, want %v (rate %.1f/s)", i, s.after, k.Warm(), s.warm, k.Rate())
				}
			}
		})
	}
	// A call after a stall shorter than ColdAfter asks for a lease.
	k := NewKey(Config{}, 0)
	now := warmUp(t, k, 0)
	k.renewing, k.room, k.limit = false, 900, rate.Count
	now += int64(500 * time.Millisecond)
	if r := k.Decide(now, 1, "n1"); r.Want == 0 {
		t.Fatalf("first call after a 500 ms stall: %+v, want a lease asked", r)
	}
}
