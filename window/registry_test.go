package window

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

func mustTable(t testing.TB, rules ...string) *limits.Table {
	t.Helper()
	var rs []limits.Rule
	for _, s := range rules {
		pattern, rate, _ := strings.Cut(s, " ")
		rs = append(rs, limits.Rule{Pattern: pattern, Rate: limits.MustParseRate(rate)})
	}
	tab, err := limits.NewTable(rs...)
	if err != nil {
		t.Fatalf("NewTable(%v) = %v", rules, err)
	}
	return tab
}

func mustRegistry(t testing.TB, cfg Config, rules ...string) *Registry {
	t.Helper()
	r, err := NewRegistry(cfg, mustTable(t, rules...))
	if err != nil {
		t.Fatalf("NewRegistry(%+v) = %v", cfg, err)
	}
	return r
}

type request struct {
	t       int64
	key     string
	n       int64
	allowed bool
	err     error // errors.Is
}

func runRegistry(t *testing.T, r *Registry, reqs []request) {
	t.Helper()
	for i, q := range reqs {
		dec, err := r.AllowN(q.t, q.key, q.n)
		if dec.Allowed != q.allowed || !errors.Is(err, q.err) || (q.err == nil) != (err == nil) {
			t.Errorf("step %d: AllowN(%v, %q, %v) = %v, %v; want %v, %v", i, ts(q.t), q.key, q.n, dec.Allowed, err, q.allowed, q.err)
		}
	}
}

func TestRegistryAllowN(t *testing.T) {
	r := mustRegistry(t, Config{}, "orders.create 3/s", "user:* 2/s")
	runRegistry(t, r, []request{
		{t0, "orders.create", 2, true, nil},
		{t0, "orders.create", 1, true, nil},
		{t0, "orders.create", 1, false, nil},
		{t0, "user:1", 2, true, nil},
		{t0, "user:2", 2, true, nil}, // each matching key has its own window
		{t0, "user:1", 1, false, nil},
		{t0, "orders.create", 0, true, nil},
		{t0 + 10*d, "orders.create", 3, true, nil},
		{t0 + 10*d, "user:1", 2, true, nil},
	})
	if got := r.Len(); got != 3 {
		t.Errorf("Len() = %v, want 3", got)
	}
	w, rule, ok := r.Lookup("user:1")
	if !ok || rule.Pattern != "user:*" || w.Rate() != limits.MustParseRate("2/s") {
		t.Errorf("Lookup(user:1) = %v, %v, %v; want the user:* window", w, rule, ok)
	}
	if _, _, ok := r.Lookup("user:3"); ok {
		t.Errorf("Lookup(user:3) found a window no request created")
	}
	if st := r.Stats(); st.Created != 3 || st.Keys != 3 {
		t.Errorf("Stats() = %+v, want 3 created, 3 keys", st)
	}
	dec, _ := r.AllowN(t0+10*d, "user:1", 1)
	want := Decision{RetryAfter: time.Second, Limit: limits.MustParseRate("2/s")}
	if dec != want {
		t.Errorf("AllowN(t0+1s, user:1, 1) = %+v, want %+v", dec, want)
	}
}

func TestRegistryBadInput(t *testing.T) {
	r := mustRegistry(t, Config{}, "k 3/s", "p:* 3/s")
	tests := []struct {
		key      string
		n        int64
		err      error
		mentions string
	}{
		{"", 1, limits.ErrInvalidKey, `""`},
		{"has space", 1, limits.ErrInvalidKey, "0x20"},
		{strings.Repeat("x", 300), 1, limits.ErrInvalidKey, "300 bytes"},
		{"k", -2, ErrInvalidN, "-2"},
		{"p:new", -2, ErrInvalidN, "-2"}, // no window created for a bad n
		{"k", 4, ErrExceedsLimit, "n 4"},
		{"k", 4, ErrExceedsLimit, "3/s"},
	}
	for i, tt := range tests {
		dec, err := r.AllowN(t0, tt.key, tt.n)
		if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.mentions) || !strings.HasPrefix(err.Error(), "quotamesh/") {
			t.Errorf("step %d: AllowN(t0, %q, %v) error = %v, want %v naming %q", i, clip(tt.key), tt.n, err, tt.err, tt.mentions)
		}
		if dec.Allowed || dec.RetryAfter != Never {
			t.Errorf("step %d: AllowN(t0, %q, %v) = %+v, want a denial with RetryAfter Never", i, clip(tt.key), tt.n, dec)
		}
	}
	if got := r.Len(); got != 1 {
		t.Errorf("Len() = %v after bad requests, want 1: k, created by the request for 4 (bad keys and n < 0 create nothing)", got)
	}
}

func TestRegistryUnknownKeys(t *testing.T) {
	for _, tt := range []struct {
		policy Policy
		allow  bool
	}{{PolicyDefault, true}, {PolicyAllow, true}, {PolicyDeny, false}} {
		r := mustRegistry(t, Config{UnknownKeys: tt.policy}, "known 1/s")
		for i := range 3 {
			dec, err := r.AllowN(t0, fmt.Sprintf("unknown:%d", i), 1)
			if err != nil || dec.Allowed != tt.allow || !dec.Unlimited {
				t.Errorf("policy %v: AllowN(unknown:%d) = %+v, %v; want allowed %v, unlimited", tt.policy, i, dec, err, tt.allow)
			}
		}
		if r.Len() != 0 || r.Stats().Unlimited != 3 {
			t.Errorf("policy %v: Len() = %v, Stats() = %+v; want no window, 3 unlimited decisions", tt.policy, r.Len(), r.Stats())
		}
		if _, _, err := r.GetOrCreate(t0, "unknown:1"); !errors.Is(err, limits.ErrNoRule) || !strings.Contains(err.Error(), "unknown:1") {
			t.Errorf("GetOrCreate(unknown:1) = %v, want limits.ErrNoRule naming the key", err)
		}
	}
	r, err := NewRegistry(Config{}, nil)
	if err != nil {
		t.Fatalf("NewRegistry(nil table) = %v", err)
	}
	if dec, err := r.AllowN(t0, "any", 1); err != nil || !dec.Allowed || !dec.Unlimited {
		t.Errorf("nil table: AllowN(any) = %+v, %v; want allowed, unlimited", dec, err)
	}
}

func TestRegistryMaxKeys(t *testing.T) {
	for _, tt := range []struct {
		policy Policy
		allow  bool
	}{{PolicyDefault, false}, {PolicyDeny, false}, {PolicyAllow, true}} {
		r := mustRegistry(t, Config{MaxKeys: 2, WhenFull: tt.policy}, "k:* 1/s")
		runRegistry(t, r, []request{
			{t0, "k:1", 1, true, nil},
			{t0, "k:2", 1, true, nil},
			{t0, "k:3", 1, tt.allow, ErrTooManyKeys},
			{t0, "k:1", 1, false, nil}, // existing keys still work
		})
		_, err := r.AllowN(t0, "k:4", 1)
		if err == nil || !strings.Contains(err.Error(), "k:4") || !strings.Contains(err.Error(), "MaxKeys is 2") {
			t.Errorf("AllowN(k:4) error = %v, want it to name the key and the bound", err)
		}
		if r.Len() != 2 || r.Stats().Rejected != 2 {
			t.Errorf("Len() = %v, Stats() = %+v; want 2 keys, 2 rejected", r.Len(), r.Stats())
		}
	}
}

func TestRegistryOnCreate(t *testing.T) {
	var calls []string
	var r *Registry
	r = mustRegistry(t, Config{OnCreate: func(key string, rule limits.Rule, w *Window) {
		if _, _, ok := r.Lookup(key); ok {
			t.Errorf("OnCreate(%q): the window is already visible", key)
		}
		calls = append(calls, key+" "+rule.Rate.String())
		w.SetQuota(1) // the node's share
	}}, "k:* 5/s")
	runRegistry(t, r, []request{
		{t0, "k:a", 1, true, nil},
		{t0, "k:a", 1, false, nil}, // quota 1 from OnCreate
		{t0, "k:b", 1, true, nil},
	})
	if want := []string{"k:a 5/s", "k:b 5/s"}; fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("OnCreate calls = %v, want %v", calls, want)
	}
}

func TestRegistrySweepEvicts(t *testing.T) {
	r := mustRegistry(t, Config{}, "short 5/s", "long 5/min", "custom:* 5/s")
	runRegistry(t, r, []request{
		{t0, "short", 5, true, nil},
		{t0, "long", 5, true, nil},
	})
	steps := []struct {
		now     int64
		evicted int
		keys    int
	}{
		{t0 + 99*d, 0, 2},   // short idles 10 s (max(2 s, 10 s))
		{t0 + 100*d, 1, 1},  // short goes
		{t0 + 1199*d, 0, 1}, // long idles 120 s
		{t0 + 1200*d, 1, 0}, // long goes
		{t0 + 5000*d, 0, 0}, // nothing left
	}
	for i, s := range steps {
		if st := r.Sweep(s.now); st.Evicted != s.evicted || st.Keys != s.keys {
			t.Errorf("step %d: Sweep(%v) = %+v, want %d evicted, %d keys", i, ts(s.now), st, s.evicted, s.keys)
		}
	}
	r2 := mustRegistry(t, Config{IdleAfter: 3 * time.Second}, "k 5/s")
	runRegistry(t, r2, []request{{t0, "k", 1, true, nil}})
	if st := r2.Sweep(t0 + 29*d); st.Evicted != 0 {
		t.Errorf("IdleAfter 3s: Sweep(t0+2.9s) evicted %d, want 0", st.Evicted)
	}
	if st := r2.Sweep(t0 + 30*d); st.Evicted != 1 {
		t.Errorf("IdleAfter 3s: Sweep(t0+3s) evicted %d, want 1", st.Evicted)
	}
	if st := r.Stats(); st.Evicted != 2 || st.Created != 2 {
		t.Errorf("Stats() = %+v, want 2 created, 2 evicted", st)
	}
}

// TestRegistryLateCounts plays the race between a request and an eviction:
// the request loaded the window just before Sweep removed it and counted
// into it after. The next Sweep must move that count to the key's live
// window, or give the key a window if it has none.
func TestRegistryLateCounts(t *testing.T) {
	r := mustRegistry(t, Config{}, "k 5/s")
	runRegistry(t, r, []request{{t0, "k", 5, true, nil}})
	late := t0 + 100*d
	stale, _, _ := r.Lookup("k") // a request loaded the entry...
	if st := r.Sweep(late); st.Evicted != 1 {
		t.Fatalf("Sweep(%v) = %+v, want the idle window evicted", ts(late), st)
	}
	if !stale.AllowN(late, 2) { // ...and counts after the eviction
		t.Fatalf("late AllowN on the evicted window was denied; it is empty")
	}
	runRegistry(t, r, []request{{late, "k", 3, true, nil}}) // a new request: a new window
	st := r.Sweep(late + d)
	if st.Migrated != 1 || st.MigratedAdmitted != 2 || st.MigratedOffered != 2 {
		t.Errorf("Sweep(%v) = %+v, want the 2 late tokens migrated", ts(late+d), st)
	}
	w, _, _ := r.Lookup("k")
	if a, _ := w.Counts(late + d); a != 5 {
		t.Errorf("live window admitted = %v after migration, want 3 + 2 late", a)
	}
	runRegistry(t, r, []request{{late + d, "k", 1, false, nil}})

	// The same race with no request after it: the key gets its window back.
	r2 := mustRegistry(t, Config{}, "k 5/s")
	runRegistry(t, r2, []request{{t0, "k", 1, true, nil}})
	stale, _, _ = r2.Lookup("k")
	r2.Sweep(late)
	stale.AllowN(late, 4)
	if st := r2.Sweep(late + d); st.MigratedAdmitted != 4 || st.Keys != 1 {
		t.Errorf("Sweep with late counts and no live window = %+v, want 4 admitted migrated into a new window", st)
	}
	runRegistry(t, r2, []request{{late + d, "k", 1, true, nil}, {late + d, "k", 1, false, nil}})
	if st := r2.Sweep(late + 2*d); st.Migrated != 0 {
		t.Errorf("a third Sweep migrated again: %+v", st)
	}
}

func TestRegistrySetTableCountChange(t *testing.T) {
	r := mustRegistry(t, Config{}, "k 5/s", "p:* 5/s")
	runRegistry(t, r, []request{{t0, "k", 4, true, nil}, {t0, "p:1", 5, true, nil}})
	before, _, _ := r.Lookup("k")
	r.SetTable(mustTable(t, "k 10/s", "p:* 5/s"))
	after, rule, _ := r.Lookup("k")
	if after != before || rule.Rate != limits.MustParseRate("10/s") || after.Rate().Count != 10 {
		t.Fatalf("after a count change: window %p (was %p), rule %v; want the same window at 10/s", after, before, rule)
	}
	runRegistry(t, r, []request{
		{t1, "k", 6, true, nil}, // the 4 already admitted still count
		{t1, "k", 1, false, nil},
		{t1, "p:1", 1, false, nil},
	})
	if st := r.Stats(); st.Replaced != 0 || st.Removed != 0 {
		t.Errorf("Stats() = %+v, want nothing replaced or removed", st)
	}
}

func TestRegistrySetTableWindowChange(t *testing.T) {
	r := mustRegistry(t, Config{}, "k 10/s")
	runRegistry(t, r, []request{{t0, "k", 4, true, nil}, {t5, "k", 3, true, nil}})
	old, _, _ := r.Lookup("k")
	r.SetTable(mustTable(t, "k 10/500ms"))
	w, rule, _ := r.Lookup("k")
	if w == old || rule.Rate != limits.MustParseRate("10/500ms") {
		t.Fatalf("after a window change: window %p (was %p), rule %v; want a new 500ms window", w, old, rule)
	}
	// Carried over: slot 5's 3 are inside the new 5-slot window, slot 0's 4
	// are not.
	if a, o := w.Counts(t5); a != 3 || o != 3 {
		t.Errorf("new window Counts(t5) = %v, %v, want 3, 3 carried over", a, o)
	}
	if a, _ := old.Counts(t5); a != 0 || old.Quota() != 0 {
		t.Errorf("old window after the change: admitted %v, quota %v; want 0, 0", a, old.Quota())
	}
	// A request that raced with the change is denied by the old window...
	if old.AllowN(t5, 1) {
		t.Errorf("old window admitted a racing request")
	}
	runRegistry(t, r, []request{{t5, "k", 7, true, nil}, {t5, "k", 1, false, nil}})
	// ...and its demand moves over at the next Sweep.
	if st := r.Sweep(t5); st.MigratedOffered != 1 || st.MigratedAdmitted != 0 {
		t.Errorf("Sweep = %+v, want the racing request's 1 offered migrated", st)
	}
	if _, o := w.Counts(t5); o != 3+7+1+1 {
		t.Errorf("new window offered = %v, want 12", o)
	}
	if st := r.Stats(); st.Replaced != 1 || st.Created != 2 || st.Keys != 1 {
		t.Errorf("Stats() = %+v, want 1 replaced, 2 created, 1 key", st)
	}
}

func TestRegistrySetTableRemoved(t *testing.T) {
	r := mustRegistry(t, Config{UnknownKeys: PolicyDeny}, "k 1/s", "j 1/s")
	runRegistry(t, r, []request{{t0, "k", 1, true, nil}, {t0, "j", 1, true, nil}})
	r.SetTable(mustTable(t, "j 1/s"))
	if _, _, ok := r.Lookup("k"); ok || r.Len() != 1 || r.Stats().Removed != 1 {
		t.Errorf("after removing k's rule: Lookup(k) found %v, Len() = %v, Stats() = %+v; want gone, 1, 1 removed", ok, r.Len(), r.Stats())
	}
	runRegistry(t, r, []request{{t0, "k", 1, false, nil}, {t0, "j", 1, false, nil}})
	if r.Table().Len() != 1 {
		t.Errorf("Table() has %d rules, want 1", r.Table().Len())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg      Config
		mentions string
	}{
		{Config{MaxKeys: -1}, "MaxKeys -1"},
		{Config{IdleAfter: -time.Second}, "IdleAfter -1s"},
		{Config{UnknownKeys: 7}, "UnknownKeys is Policy(7)"},
		{Config{WhenFull: 9}, "WhenFull is Policy(9)"},
	}
	for i, tt := range tests {
		err := tt.cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d: Validate(%+v) = %v, want ErrInvalidConfig naming %q", i, tt.cfg, err, tt.mentions)
		}
		if r, err := NewRegistry(tt.cfg, nil); r != nil || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("step %d: NewRegistry(%+v) = %v, %v; want nil, ErrInvalidConfig", i, tt.cfg, r, err)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: Validate() = %v, want nil", err)
	}
}

func TestRegistryAllowNDoesNotAllocate(t *testing.T) {
	r := mustRegistry(t, Config{}, "k:* 1000/s")
	key := "k:" + fmt.Sprint(42) // not a constant: as a request would carry it
	r.AllowN(t0, key, 1)
	now := t0
	if got := testing.AllocsPerRun(1000, func() {
		now += 1e5
		if _, err := r.AllowN(now, key, 1); err != nil {
			t.Fatal(err)
		}
	}); got != 0 {
		t.Errorf("Registry.AllowN on an existing key allocates %v times per call, want 0", got)
	}
	if got := testing.AllocsPerRun(1000, func() { r.AllowN(now, "unknown", 1) }); got != 0 {
		t.Errorf("Registry.AllowN on an unknown key allocates %v times per call, want 0", got)
	}
}

// TestRegistryConcurrent runs requests for new and existing keys against
// sweeps and table changes. The key bound must hold; every window's total
// must equal what its slots hold and stay within [0, 60]: windows of up to
// 30 per second carried into a 2 s window may legitimately bring two
// seconds' worth, over its count of 20, until they expire.
func TestRegistryConcurrent(t *testing.T) {
	defer morePs()()
	tables := []*limits.Table{
		mustTable(t, "k:* 20/s", "x 5/s"),
		mustTable(t, "k:* 30/s", "x 5/s"),
		mustTable(t, "k:* 20/2s"),
	}
	r := mustRegistry(t, Config{MaxKeys: 40}, "k:* 20/s", "x 5/s")
	var clock atomic.Int64
	clock.Store(t0)
	end := t0 + 200*d
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; clock.Load() < end; i++ {
			r.Sweep(clock.Load())
			r.SetTable(tables[i%len(tables)])
		}
	})
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				now := clock.Load()
				if now >= end {
					return
				}
				if i%16 == 0 {
					now = clock.Add(d / 10)
				}
				key := fmt.Sprintf("k:%d", (i*7+g)%50)
				if i%5 == 0 {
					key = "x"
				}
				_, err := r.AllowN(now, key, 1)
				if err != nil && !errors.Is(err, ErrTooManyKeys) {
					t.Errorf("AllowN(%q) = %v", key, err)
					return
				}
				if n := r.Len(); n > 40 {
					t.Errorf("Len() = %v, want at most MaxKeys 40", n)
					return
				}
			}
		})
	}
	wg.Wait()
	r.keys.rangeAll(func(key string, en *entry) bool {
		rule, w := en.rule, en.w
		tot := w.Total()
		if tot < 0 || tot > 60 {
			t.Errorf("key %q (rule %v): Total() = %v, want within [0, 60]", key, rule, tot)
		}
		if a, _ := w.Counts(slotStart(w.OpenEpoch())); a != tot {
			t.Errorf("key %q (rule %v): slots hold %v admitted, Total() = %v", key, rule, a, tot)
		}
		return true
	})
}

// TestSweepLooksOnlyAtDueKeys: Sweep evicts every idle window once its
// time has come, tells OnEvict, and until then (or for keys written since)
// takes none; a key written after its window's idle time started waits its
// whole idle time again.
func TestSweepLooksOnlyAtDueKeys(t *testing.T) {
	var evicted []string
	var r *Registry
	r = mustRegistry(t, Config{IdleAfter: 10 * time.Second, OnEvict: func(key string, w *Window) {
		if _, _, ok := r.Lookup(key); ok {
			t.Errorf("OnEvict(%q) while the key still has a window", key)
		}
		evicted = append(evicted, key)
	}}, "k* 10/s")
	for i := range 1000 {
		if _, err := r.AllowN(t0, fmt.Sprint("k", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	r.Drain(func(string) {})
	if st := r.Sweep(t0 + int64(5*time.Second)); st.Evicted != 0 {
		t.Errorf("Sweep before the idle time evicted %d", st.Evicted)
	}
	// k0 is written at 8 s: it stays until 18 s.
	if _, err := r.AllowN(t0+int64(8*time.Second), "k0", 1); err != nil {
		t.Fatal(err)
	}
	r.Drain(func(string) {})
	if st := r.Sweep(t0 + int64(11*time.Second)); st.Evicted != 999 || len(evicted) != 999 {
		t.Errorf("Sweep after the idle time evicted %d (OnEvict %d), want the 999 unwritten", st.Evicted, len(evicted))
	}
	if st := r.Sweep(t0 + int64(18500*time.Millisecond)); st.Evicted != 1 || r.Stats().Keys != 0 {
		t.Errorf("Sweep after k0's idle time evicted %d, %d keys left; want k0, none", st.Evicted, r.Stats().Keys)
	}
}
