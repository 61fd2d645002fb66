// Package lease is the SDK's decision logic for one key, pure: which calls
// it decides alone from a lease, which it sends to the key's home node as
// decisions, when it asks for a lease, renews it, settles it or lets it go.
// Time is an argument everywhere and nothing here starts a goroutine or does
// I/O, so the simulator drives the very code the SDK runs.
//
// The model (docs/design.md §10):
//
//   - A key is *cold* at this SDK while its calls are too few to fill a
//     lease: every call is a decision by the key's home node, one round
//     trip, exact. A key becomes *warm* once its calls per lease TTL reach
//     Config.WarmTokens, and cold again below Config.ColdTokens (hysteresis).
//   - A cold key has no state at all: its calls are counted in a Filter,
//     a fixed-size sketch, until they reach WarmTokens in one TTL; then it
//     gets a Key (NewWarmKey), which it keeps until it has been cold, or
//     without calls, for Config.ForgetAfter. So the default mode costs what
//     strict mode costs on keys a lease would not pay for.
//   - A warm key's decisions ask for a lease alongside (Request.Want): the
//     lease rides on the answer, so a call without a usable lease costs one
//     round trip at most, never a wait for a lease and then a decision.
//   - The node reserves a lease's tokens and counts as admitted only those
//     the SDK reports used (Request.Settle), in the slot it hears of them,
//     never earlier than they were used; tokens never reported are counted
//     as used when the lease expires at the node. The SDK uses a lease until
//     its own expiry (sent + TTL, before the node's) and settles it when a
//     renewal replaces it or it expires.
//   - A renewal goes out when three quarters of a lease are used or half
//     its TTL has passed, while the key is warm; the node's "no room" answer
//     denies the key's calls locally until the RetryAfter it gave (clamped).
//
// Key's Take is lock-free and safe for concurrent use. Every other method
// must be called with the caller's lock for that key held (the SDK keeps a
// mutex per key; the simulator is single-threaded).
package lease

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// Defaults for zero Config fields.
const (
	DefaultTTL         = 50 * time.Millisecond
	DefaultHorizon     = 10 * time.Millisecond
	DefaultWarmTokens  = 4
	DefaultColdTokens  = 1
	DefaultMaxDeny     = 20 * time.Millisecond
	DefaultMinDeny     = time.Millisecond
	DefaultForgetAfter = 5 * time.Second
	DefaultRateWindow  = 200 * time.Millisecond
	DefaultFarTTL      = 500 * time.Millisecond
	DefaultFarShare    = 8
	DefaultColdAfter   = time.Second
)

// Config tunes the lease logic. The zero value of every field means its
// default.
type Config struct {
	// TTL is how long the SDK asks to use a lease (default 50 ms: half a
	// slot, see client.DefaultLeaseTTL); the node may grant shorter. Longer leases mean fewer requests for warm keys and,
	// when a key's demand stops, room held idle for longer.
	TTL time.Duration
	// Horizon sizes a lease: the calls one Horizon brings at the key's
	// estimated rate, at least WarmTokens (default 10 ms; the TTL when
	// that is shorter). A lease sized for its whole TTL held up to a TTL
	// of calls at a client whose demand had just moved elsewhere, idle
	// while other clients were denied: with the hot node moving every
	// 200 ms that cost 2.5-3 % of the limit. A shorter TTL fixes that too,
	// but raises the rate a key needs for a lease to pay (WarmTokens per
	// TTL).
	Horizon time.Duration
	// WarmTokens: a key whose calls per TTL reach this many asks for leases
	// (default 4). ColdTokens: a warm key whose calls per TTL fall below
	// this stops (default 1), at once near its limit, and far from it
	// (FarTTL) only once they stayed below for ColdAfter (default 1 s).
	// ColdTokens must be below WarmTokens. Far from its limit a warm key
	// costs nothing while it has no calls (an unused lease lapses, nothing
	// is renewed), and a caller stalled for a few hundred milliseconds (a
	// busy machine, a GC pause) used to turn its keys cold, every call
	// after the stall then a decision by the node until the rate warmed
	// them again: at 2,100 keys of 100/s per client that made a quarter of
	// the calls decisions. Near its limit a warm key at a few calls per
	// TTL holds lease tokens it leaves idle, so it goes cold at once (a
	// second's grace there cost 0.5 % of a key whose hot node moved every
	// second at 7 nodes in the simulator).
	WarmTokens, ColdTokens float64
	ColdAfter              time.Duration
	// MaxDeny and MinDeny clamp how long calls are denied locally after the
	// home node said it had no room (defaults 20 ms and 1 ms).
	MaxDeny, MinDeny time.Duration
	// ForgetAfter is how long a key may see no call before its state can be
	// dropped (default 5 s), once it holds and owes nothing.
	ForgetAfter time.Duration
	// RateWindow is the time constant of the rate estimate (default 200 ms).
	RateWindow time.Duration
	// FarTTL and FarShare size leases for a key far from its limit: while
	// the room the node last said it had left for the key (Reply.Remaining)
	// is at least 7/8 of the key's limit, the next lease holds up to the
	// calls one FarTTL brings, but at most 1/FarShare of that room, and is
	// used for up to FarTTL (defaults 500 ms and 8; the node's lease TTL
	// caps it). Such a lease can hold idle at most 1/FarShare of room
	// nobody else was using; as a key's demand rises to its limit the room
	// falls under 7/8 of the limit and leases are a Horizon's again (at
	// half, a key ramping to its limit lost 1-2 % of it over 10 s: a far
	// lease's use is counted when it is settled, up to its TTL late). A key at
	// its limit frees a slot's worth of room at a time, a tenth of its
	// limit for a 10-slot window, never half: sizing by the room alone
	// (1/FarShare of whatever was left) cost 4-5 % of a 1000/s key at 10
	// nodes in the simulator. Far leases save most of the requests of a
	// client calling a key at hundreds per second far below its limit.
	FarTTL   time.Duration
	FarShare float64
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Horizon == 0 {
		c.Horizon = DefaultHorizon
	}
	if c.WarmTokens == 0 {
		c.WarmTokens = DefaultWarmTokens
	}
	if c.ColdTokens == 0 {
		c.ColdTokens = DefaultColdTokens
	}
	if c.ColdAfter == 0 {
		c.ColdAfter = DefaultColdAfter
	}
	if c.MaxDeny == 0 {
		c.MaxDeny = DefaultMaxDeny
	}
	if c.MinDeny == 0 {
		c.MinDeny = DefaultMinDeny
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = DefaultForgetAfter
	}
	if c.RateWindow == 0 {
		c.RateWindow = DefaultRateWindow
	}
	if c.FarTTL == 0 {
		c.FarTTL = DefaultFarTTL
	}
	if c.FarShare == 0 {
		c.FarShare = DefaultFarShare
	}
	return c
}

// Validate reports the first field of c (with defaults applied) that is out
// of range, naming it and its value.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.TTL < time.Millisecond || c.TTL > time.Minute:
		return fmt.Errorf("lease TTL %v out of range [1ms, 1m]", c.TTL)
	case c.Horizon < time.Millisecond || c.Horizon > time.Minute:
		return fmt.Errorf("lease horizon %v out of range [1ms, 1m]", c.Horizon)
	case c.WarmTokens <= 0 || math.IsNaN(c.WarmTokens) || math.IsInf(c.WarmTokens, 0):
		return fmt.Errorf("lease warm tokens %v must be positive", c.WarmTokens)
	case !(c.ColdTokens > 0 && c.ColdTokens < c.WarmTokens):
		return fmt.Errorf("lease cold tokens %v must be positive and below warm tokens %v", c.ColdTokens, c.WarmTokens)
	case c.ColdAfter < 0 || c.ColdAfter > c.ForgetAfter:
		return fmt.Errorf("lease cold-after %v out of range [0, forget-after %v]", c.ColdAfter, c.ForgetAfter)
	case c.MinDeny <= 0 || c.MaxDeny < c.MinDeny:
		return fmt.Errorf("lease deny bounds [%v, %v] must be positive and ordered", c.MinDeny, c.MaxDeny)
	case c.ForgetAfter < c.TTL:
		return fmt.Errorf("lease forget-after %v is shorter than the TTL %v", c.ForgetAfter, c.TTL)
	case c.RateWindow <= 0:
		return fmt.Errorf("lease rate window %v must be positive", c.RateWindow)
	case c.FarTTL < c.TTL || c.FarTTL > c.ForgetAfter:
		return fmt.Errorf("lease far TTL %v out of range [TTL %v, forget-after %v]", c.FarTTL, c.TTL, c.ForgetAfter)
	case !(c.FarShare >= 1) || math.IsInf(c.FarShare, 0):
		return fmt.Errorf("lease far share %v must be at least 1", c.FarShare)
	}
	return nil
}

// Verdict is what Take decided.
type Verdict uint8

const (
	// Ask: the call needs a decision by the home node (Key.Decide).
	Ask Verdict = iota
	// Admit: allowed from the lease.
	Admit
	// Deny: denied locally; the home node said it has no room until then.
	Deny
)

func (v Verdict) String() string {
	switch v {
	case Ask:
		return "ask"
	case Admit:
		return "admit"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Settle reports the use of one lease to the node that granted it.
type Settle struct {
	// Node granted the lease; ID is its number for the lease there.
	Node string
	ID   uint64
	// Used is how many of its tokens were used (the rest go back).
	Used int64
}

// Request is what the SDK sends the key's home node: a decision of N calls
// (N > 0), a lease (Want > 0), a report of use (Settle, Offered), or
// several of these at once.
type Request struct {
	// N calls to decide now, all or none; 0 for none.
	N int64
	// Want tokens of a new lease; 0 for none. TTL is how long the SDK
	// will use it (Config.TTL, or Config.FarTTL for a far lease; the
	// node's TTL caps it). The wire does not carry TTL.
	Want int64
	TTL  time.Duration
	// Offered calls since the last report that the node did not see: those
	// denied locally (the use of a lease is reported by settling it).
	Offered int64
	// Settle, if its ID is not zero, settles a lease of this node.
	Settle Settle
}

// NoRoom reports whether a node's answer to r says that its room for the
// key ran out: it denied r's calls, or granted less of the lease r asked
// for than asked with nothing remaining (Reply.NoRoom). The SDK and the
// simulator read a node's answer with it.
func (r Request) NoRoom(allowed bool, granted, remaining int64) bool {
	return (r.N > 0 && !allowed) || (r.Want > 0 && granted < r.Want && remaining <= 0)
}

// Empty reports whether r asks for nothing and reports nothing.
func (r Request) Empty() bool {
	return r.N == 0 && r.Want == 0 && r.Offered == 0 && r.Settle.ID == 0
}

// Reply is the node's answer to a Request, as far as the lease logic needs
// it.
type Reply struct {
	// Node is the node that answered.
	Node string
	// Allowed is the decision on the request's N calls.
	Allowed bool
	// LeaseID and Granted describe the new lease (Granted 0: none); TTL is
	// how long the node holds it (0: the SDK's own).
	LeaseID uint64
	Granted int64
	TTL     time.Duration
	// NoRoom reports that the node's room for the key ran out: it granted
	// less than asked, or denied; RetryAfter is when it expects room.
	NoRoom     bool
	RetryAfter time.Duration
	// Limit is the key's rate, zero if unlimited.
	Limit limits.Rate
	// Remaining is the room the node had left for the key after this
	// answer (0 if unknown, denied or unlimited): it sizes far leases.
	Remaining int64
}

// Lease is one grant in use. Its fields are fixed but for the tokens left,
// which calls take with compare-and-swap.
type Lease struct {
	tokens atomic.Int64

	// Node and ID name the lease at the node that granted it.
	Node string
	ID   uint64
	// Granted is how many tokens it held.
	Granted int64
	// Expires is the SDK's clock time after which no call uses it: the send
	// time of the request that brought it plus its TTL, so before the node's
	// own expiry.
	Expires int64
	// TTL is how long it lives: the SDK's or the node's, the shorter.
	TTL time.Duration
	// Limit is the key's rate.
	Limit limits.Rate
}

// Tokens returns the tokens left.
func (l *Lease) Tokens() int64 { return l.tokens.Load() }

// Key is one key's state at one SDK.
type Key struct {
	cfg Config

	// Read and written by Take without a lock.
	cur       atomic.Pointer[Lease]
	denyUntil atomic.Int64 // clock time until which calls are denied locally
	denied    atomic.Int64 // tokens denied locally, ever
	asked     atomic.Int64 // tokens sent to the node as decisions, ever
	lastCall  atomic.Int64 // clock time of the newest call that was not admitted from a lease

	// Under the caller's lock.
	warm       bool
	renewing   bool // a request with Want is out
	rate       float64
	rateAt     int64 // clock time of the last rate update
	usedBase   int64 // tokens used of retired leases
	seenUsed   int64 // usedBase + current lease use at the last rate update
	seenDenied int64
	seenAsked  int64
	reported   int64 // denied, as last reported in Offered
	owed       []Settle
	lastActive int64 // clock time some use was last seen
	coldSince  int64 // clock time the key last became cold (or was created cold)
	lowSince   int64 // clock time a warm key's rate fell below ColdTokens per TTL; 0 while above
	room       int64 // the room the key's node last said it had left
	limit      int64 // the key's limit (count per window) in that answer; 0 unknown
}

// NewKey returns the state of a key first seen at now.
func NewKey(cfg Config, now int64) *Key {
	k := &Key{cfg: cfg.WithDefaults(), rateAt: now, lastActive: now, coldSince: now}
	k.lastCall.Store(now)
	return k
}

// NewWarmKey returns the state of a key whose calls just reached
// WarmTokens in one TTL (Filter.Note): warm from its first call (which
// asks for a lease alongside its decision), its rate estimate starting at
// WarmTokens per TTL.
func NewWarmKey(cfg Config, now int64) *Key {
	k := NewKey(cfg, now)
	k.warm = true
	k.rate = k.cfg.WarmTokens / k.cfg.TTL.Seconds()
	return k
}

// Take decides n calls at now from the lease if it can: Admit (with the
// tokens left), Deny (with how long the node expects no room), or Ask, when
// the call needs a decision by the home node. Lock-free; safe for
// concurrent use.
func (k *Key) Take(now, n int64) (v Verdict, left int64, retry time.Duration) {
	for {
		l := k.cur.Load()
		if l == nil || now >= l.Expires {
			break
		}
		t := l.tokens.Load()
		if t < n {
			break
		}
		if l.tokens.CompareAndSwap(t, t-n) {
			return Admit, t - n, 0
		}
	}
	if du := k.denyUntil.Load(); now < du {
		k.denied.Add(n)
		return Deny, 0, time.Duration(du - now)
	}
	return Ask, 0, 0
}

// Decide returns the request for a decision of n calls at now, sent to node
// (the key's home): with a lease asked for alongside when the key is warm
// and no renewal is out, and with a settlement owed to that node.
func (k *Key) Decide(now, n int64, node string) Request {
	k.asked.Add(n)
	k.lastCall.Store(now)
	k.updateRate(now)
	r := Request{N: n, Offered: k.offered()}
	if k.warm && !k.renewing {
		r.Want, r.TTL = k.want()
		k.renewing = true
	}
	r.Settle = k.takeOwed(node)
	return r
}

// Plan returns what the SDK should send node (the key's home) at now
// without a call waiting: a renewal of a warm key's lease that is three
// quarters used or half through its TTL, a settlement of a lease that
// expired, a report of local denials, or nothing (an empty Request). forget
// reports that the key holds and owes nothing and either saw no call for
// ForgetAfter or has been cold for ForgetAfter: its state can be dropped
// (a cold key's calls are decisions by its home node with or without
// state; Filter gives it state again if it warms up).
func (k *Key) Plan(now int64, node string) (r Request, forget bool) {
	k.updateRate(now)
	l := k.cur.Load()
	if l != nil && (now >= l.Expires || l.tokens.Load() <= 0) {
		// Expired, or used up: settle it now, so that the node counts its
		// tokens in the window from about when they were used, not up to a
		// far lease's TTL later (which denied room that was free).
		k.retire(l)
		k.cur.CompareAndSwap(l, nil)
		l = nil
	}
	if k.warm && !k.renewing && k.renewDue(now, l) {
		// The lease in use stays usable until its successor arrives
		// (Apply retires it then and owes its node a settlement).
		r.Want, r.TTL = k.want()
		k.renewing = true
	}
	r.Settle = k.takeOwed(node)
	r.Offered = k.offered()
	if r.Empty() && l == nil && len(k.owed) == 0 && !k.renewing &&
		(now-max(k.lastActive, k.lastCall.Load()) >= int64(k.cfg.ForgetAfter) ||
			!k.warm && now-k.coldSince >= int64(k.cfg.ForgetAfter)) {
		return Request{}, true
	}
	return r, false
}

// renewDue reports whether a warm key's lease l (nil if none) should be
// renewed at now.
func (k *Key) renewDue(now int64, l *Lease) bool {
	if now < k.denyUntil.Load() {
		return false // the node has no room; it said when to ask again
	}
	if l == nil {
		return false // the next call's decision asks for one
	}
	t := l.tokens.Load()
	if t >= l.Granted {
		return false // unused: let it lapse
	}
	return t*4 <= l.Granted || now >= l.Expires-int64(l.TTL)/2
}

// Apply installs the node's answer rep to r, a request this key sent at
// sent (the SDK's clock) and whose answer arrived at now. A nil rep means
// the request failed (no answer): a lease it asked for will not come, and
// the settlement it carried is lost (the node counts the lease as used).
func (k *Key) Apply(now, sent int64, r Request, rep *Reply) {
	if r.Want > 0 {
		k.renewing = false
	}
	if rep == nil {
		return
	}
	k.room, k.limit = rep.Remaining, rep.Limit.Count
	switch {
	case rep.NoRoom && !k.warm:
		// A cold key's calls are decisions by the node, as a key's
		// without state are: denying them locally until RetryAfter would
		// turn away room that came back sooner.
	case rep.NoRoom:
		d := min(max(rep.RetryAfter, k.cfg.MinDeny), k.cfg.MaxDeny)
		k.denyUntil.Store(max(k.denyUntil.Load(), now+int64(d)))
	case rep.Granted > 0 || (r.N > 0 && rep.Allowed):
		k.denyUntil.Store(0) // room came back: use it
	}
	if rep.Granted <= 0 {
		return
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = k.cfg.TTL
	}
	if rep.TTL > 0 {
		ttl = min(ttl, rep.TTL)
	}
	l := &Lease{Node: rep.Node, ID: rep.LeaseID, Granted: rep.Granted, Expires: sent + int64(ttl), TTL: ttl, Limit: rep.Limit}
	l.tokens.Store(rep.Granted)
	if now >= l.Expires {
		// Too late to use: settle it unused.
		k.owed = append(k.owed, Settle{Node: l.Node, ID: l.ID})
		return
	}
	if old := k.cur.Swap(l); old != nil {
		k.retire(old)
	}
}

// Release stops using the current lease, if any, and owes its node a
// settlement: for a client that is closing, or a key whose home moved.
func (k *Key) Release() {
	if l := k.cur.Swap(nil); l != nil {
		k.retire(l)
	}
}

// Idle reports whether the key holds no lease, owes nothing and has no
// renewal out: nothing would be lost by dropping its state.
func (k *Key) Idle() bool { return k.cur.Load() == nil && len(k.owed) == 0 && !k.renewing }

// Renewing reports whether a request asking for a lease is out.
func (k *Key) Renewing() bool { return k.renewing }

// Current returns the lease in use, nil if none.
func (k *Key) Current() *Lease { return k.cur.Load() }

// Warm reports whether the key asks for leases.
func (k *Key) Warm() bool { return k.warm }

// Rate is the key's estimated calls per second.
func (k *Key) Rate() float64 { return k.rate }

// Owed returns the settlements not yet sent, to any node.
func (k *Key) Owed() []Settle { return k.owed }

// DropOwed forgets the settlements owed to node (its connection is gone:
// the node counts those leases as used when they expire there).
func (k *Key) DropOwed(node string) {
	kept := k.owed[:0]
	for _, s := range k.owed {
		if s.Node != node {
			kept = append(kept, s)
		}
	}
	clear(k.owed[len(kept):])
	k.owed = kept
}

// retire takes what is left of l and owes its node a settlement.
func (k *Key) retire(l *Lease) {
	left := l.tokens.Swap(0)
	if left < 0 { // never: Take only takes what is there
		left = 0
	}
	used := l.Granted - left
	k.usedBase += used
	k.owed = append(k.owed, Settle{Node: l.Node, ID: l.ID, Used: used})
}

// TakeOwed removes and returns one settlement owed to node, if any (ID 0
// if none): for a node that is no longer the key's home.
func (k *Key) TakeOwed(node string) Settle { return k.takeOwed(node) }

// takeOwed removes and returns one settlement owed to node, if any.
func (k *Key) takeOwed(node string) Settle {
	for i, s := range k.owed {
		if s.Node == node {
			k.owed = append(k.owed[:i], k.owed[i+1:]...)
			return s
		}
	}
	return Settle{}
}

// used returns the tokens used of every lease so far.
func (k *Key) used() int64 {
	u := k.usedBase
	if l := k.cur.Load(); l != nil {
		u += l.Granted - max(l.tokens.Load(), 0)
	}
	return u
}

// offered returns the calls denied locally since the last report: demand
// the node saw neither as a decision nor as a lease's use (settlements
// report use).
func (k *Key) offered() int64 {
	d := k.denied.Load()
	o := d - k.reported
	k.reported = d
	return max(o, 0)
}

// updateRate folds the calls since the last update into the rate estimate
// (an exponential average with time constant RateWindow) and moves the key
// between cold and warm: warm at WarmTokens per TTL, cold below ColdTokens
// per TTL, at once near its limit and after ColdAfter far from it.
func (k *Key) updateRate(now int64) {
	dt := now - k.rateAt
	if dt <= 0 {
		return
	}
	used, denied, asked := k.used(), k.denied.Load(), k.asked.Load()
	calls := (used - k.seenUsed) + (denied - k.seenDenied) + (asked - k.seenAsked)
	k.seenUsed, k.seenDenied, k.seenAsked = used, denied, asked
	if calls > 0 {
		k.lastActive = now
	}
	secs := time.Duration(dt).Seconds()
	alpha := 1 - math.Exp(-float64(dt)/float64(k.cfg.RateWindow))
	k.rate += alpha * (float64(calls)/secs - k.rate)
	k.rateAt = now
	perTTL := k.rate * k.cfg.TTL.Seconds()
	switch {
	case !k.warm:
		if perTTL >= k.cfg.WarmTokens {
			k.warm, k.lowSince = true, 0
		}
	case perTTL >= k.cfg.ColdTokens:
		k.lowSince = 0
	case k.far() && k.lowSince == 0 && k.cfg.ColdAfter > 0:
		k.lowSince = now
	case !k.far() || now-k.lowSince >= int64(k.cfg.ColdAfter):
		// Near its limit at once: a warm key's leases hold tokens its few
		// calls leave idle, room other clients are denied.
		k.warm, k.coldSince, k.lowSince = false, now, 0
	}
}

// far reports whether the key's node last said it had at least 7/8 of the
// key's limit free: its leases are far leases (Config.FarTTL).
func (k *Key) far() bool { return k.limit > 0 && k.room*8 >= k.limit*7 }

// want is the size of the next lease and how long it will be used: the
// calls one Horizon (at most one TTL) brings at the estimated rate, at
// least WarmTokens, used for up to TTL; or, where the node's room is at
// least 7/8 of the key's limit (Config.FarTTL), a far lease of up to
// FarTTL's calls and 1/FarShare of the room, used for up to FarTTL.
func (k *Key) want() (int64, time.Duration) {
	w, ttl := max(math.Ceil(k.rate*min(k.cfg.Horizon, k.cfg.TTL).Seconds()), k.cfg.WarmTokens), k.cfg.TTL
	if k.far() {
		if far := min(math.Ceil(k.rate*k.cfg.FarTTL.Seconds()), math.Floor(float64(k.room)/k.cfg.FarShare)); far > w {
			w, ttl = far, k.cfg.FarTTL
		}
	}
	return int64(min(w, float64(limits.MaxCount))), ttl
}
