package window

import (
	"errors"
	"fmt"
	"testing"
)

// TestKeyBudgets floods one pattern rule with keys and checks that the
// other rules keep their room: the exact rule its window, the other
// pattern rule its reserve.
func TestKeyBudgets(t *testing.T) {
	// MaxKeys 50, one exact rule: 49 left, two pattern rules: a reserve of
	// 12 each, a pool of 25.
	r := mustRegistry(t, Config{MaxKeys: 50}, "user:* 10/s", "team:* 5/s", "orders.create 100/s")
	admitted := 0
	for i := range 100 {
		_, err := r.AllowN(t0, fmt.Sprintf("user:%d", i), 1)
		switch {
		case err == nil:
			admitted++
		case !errors.Is(err, ErrTooManyKeys):
			t.Fatalf("user:%d: %v", i, err)
		}
	}
	if admitted != 12+25 {
		t.Errorf("user:* got %d windows, want its reserve 12 and the pool 25", admitted)
	}
	if d, err := r.AllowN(t0, "orders.create", 1); err != nil || !d.Allowed || d.Unlimited {
		t.Errorf("orders.create after the flood: %+v, %v; want a window and an admission", d, err)
	}
	for i := range 12 {
		if _, err := r.AllowN(t0, fmt.Sprintf("team:%d", i), 1); err != nil {
			t.Errorf("team:%d, within its reserve of 12, after the flood: %v", i, err)
		}
	}
	_, err := r.AllowN(t0, "team:12", 1)
	if !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("team:12, past its reserve with the pool taken: %v, want ErrTooManyKeys", err)
	}
	got := r.RuleKeys()
	want := map[string]RuleKeys{
		"user:*":        {Keys: 37, Reserve: 12, Rejected: 63},
		"team:*":        {Keys: 12, Reserve: 12, Rejected: 1},
		"orders.create": {Keys: 1, Reserve: 1},
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("RuleKeys()[%q] = %+v, want %+v", p, got[p], w)
		}
	}
	if n := r.Len(); n > 50 {
		t.Errorf("Len() = %d, above MaxKeys 50", n)
	}
	// Idle windows go; the flooding rule's room comes back.
	r.Sweep(t0 + int64(MinIdleAfter) + 2*d)
	r.Sweep(t0 + int64(MinIdleAfter) + 3*d)
	if k := r.RuleKeys()["user:*"].Keys; k != 0 {
		t.Errorf("user:* holds %d windows after they were evicted as idle, want 0", k)
	}
	if _, err := r.AllowN(t0+int64(MinIdleAfter)+4*d, "user:1000", 1); err != nil {
		t.Errorf("a new user key after the sweep: %v", err)
	}
}

// TestKeyBudgetsFollowTheTable checks that a rule change re-divides MaxKeys
// and that windows already held are kept.
func TestKeyBudgetsFollowTheTable(t *testing.T) {
	r := mustRegistry(t, Config{MaxKeys: 10}, "a:* 10/s")
	for i := range 10 {
		if _, err := r.AllowN(t0, fmt.Sprintf("a:%d", i), 1); err != nil {
			t.Fatalf("a:%d: %v", i, err)
		}
	}
	r.SetTable(mustTable(t, "a:* 10/s", "b:* 10/s"))
	if got := r.RuleKeys()["a:*"]; got.Keys != 10 || got.Reserve != 2 {
		t.Errorf("a:* after adding b:*: %+v, want its 10 windows kept and a reserve of 10/(2*2)", got)
	}
	// Full: b:* meets the hard bound until a's windows go.
	if _, err := r.AllowN(t0, "b:1", 1); !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("b:1 with the registry full: %v, want ErrTooManyKeys", err)
	}
	r.SetTable(mustTable(t, "b:* 10/s"))
	if got := r.RuleKeys(); got["b:*"].Reserve != 5 || len(got) != 1 {
		t.Errorf("RuleKeys after a:* was deleted: %+v, want only b:* with a reserve of 5", got)
	}
	if _, err := r.AllowN(t0, "b:1", 1); err != nil {
		t.Errorf("b:1 once a:*'s windows were removed with their rule: %v", err)
	}
}
