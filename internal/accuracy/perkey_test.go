package accuracy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

const base = int64(1_700_000_000) * int64(time.Second) // a slot edge and a whole second

func name(i int) string { return fmt.Sprintf("k%d", i) }

type req struct {
	at, done int // ms
	key      uint32
	node     uint16
	out      Outcome
}

func logOf(reqs ...req) *Log {
	l := NewLog()
	for _, r := range reqs {
		l.Append(Request{At: time.Duration(r.at) * time.Millisecond, Done: time.Duration(r.done) * time.Millisecond,
			Key: r.key, Node: r.node, Outcome: r.out})
	}
	return l
}

func run2(keys int) Run {
	return Run{Keys: keys, Nodes: []string{"a", "b"}, Rate: limits.Rate{Count: 2, Window: time.Second}, Base: base,
		Duration: 3 * time.Second, KeyName: name}
}

// Steps of one key at 2/s: what the ideal admits, which denials were of
// demand within the limit, and the aligned windows.
func TestEvaluateOneKey(t *testing.T) {
	for i, tc := range []struct {
		reqs                                  []req
		admitted, ideal, under, falseDenials  int64
		maxWin, aligned, idealAligned, failed int64
	}{
		// Two admitted, two denied over the limit: exact.
		{reqs: []req{{0, 1, 0, 0, Admitted}, {10, 11, 0, 1, Admitted}, {20, 21, 0, 0, Denied}, {30, 31, 0, 1, Denied}},
			admitted: 2, ideal: 2, under: 2, maxWin: 2, aligned: 2, idealAligned: 2},
		// The second request is denied while only two were offered in the
		// window: a false denial, and one under the ideal.
		{reqs: []req{{0, 1, 0, 0, Admitted}, {500, 501, 0, 1, Denied}, {1200, 1201, 0, 0, Admitted}},
			admitted: 2, ideal: 3, under: 3, falseDenials: 1, maxWin: 1, aligned: 1, idealAligned: 2},
		// Admitted late, straddling a second: 3 in a sliding second, 2 in
		// any aligned one; the failed call counts nowhere but failed.
		{reqs: []req{{0, 900, 0, 0, Admitted}, {10, 950, 0, 0, Admitted}, {1000, 1001, 0, 0, Admitted}, {1010, 0, 0, 0, Failed}},
			admitted: 3, ideal: 4, under: 4, maxWin: 3, aligned: 2, idealAligned: 2, failed: 1},
	} {
		res := Evaluate(logOf(tc.reqs...), run2(1))
		pk := res.PerKey
		got := []int64{res.Admitted, res.Ideal, pk.UnderLimit, pk.FalseDenials, int64(res.MaxWindowRatio * 2),
			int64(pk.MaxAlignedRatio * 2), int64(pk.IdealMaxAlignedRatio * 2), res.Failed}
		want := []int64{tc.admitted, tc.ideal, tc.under, tc.falseDenials, tc.maxWin, tc.aligned, tc.idealAligned, tc.failed}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("step %d: admitted, ideal, under, false denials, max window, aligned, ideal aligned, failed = %v, want %v", i, got, want)
		}
	}
}

// Per-key distribution arithmetic: p50, p90, max, the share within
// max(1 %, 2 requests), and the worst key relative to that tolerance.
func TestEvaluateDistribution(t *testing.T) {
	// Five keys at 100/s offered 200/s for 4 s: the ideal admits 400 of
	// each key's 800; key k admits its first admitted[k] requests.
	l := NewLog()
	admitted := []int{400, 399, 396, 390, 420} // abs errors 0, 1, 4, 10, 20
	for ms := 0; ms < 4000; ms += 5 {
		for k := range 5 {
			out := Denied
			if ms/5 < admitted[k] { // admits the first n requests
				out = Admitted
			}
			l.Append(Request{At: time.Duration(ms) * time.Millisecond, Done: time.Duration(ms) * time.Millisecond, Key: uint32(k), Node: uint16(k % 2), Outcome: out})
		}
	}
	res := Evaluate(l, Run{Keys: 6, Nodes: []string{"a", "b"}, Rate: limits.Rate{Count: 100, Window: time.Second}, Base: base, Duration: 4 * time.Second, KeyName: name})
	pk := res.PerKey
	if res.Ideal != 5*400 || res.Offered != 5*800 {
		t.Fatalf("ideal %d, offered %d; want 2000 of 4000", res.Ideal, res.Offered)
	}
	if pk.Keys != 6 || pk.Offered != 5 || pk.AbsErrorP50 != 4 || pk.AbsErrorP90 != 10 || pk.AbsErrorMax != 20 {
		t.Errorf("keys %d, offered %d, p50 %d, p90 %d, max %d; want 6, 5, 4, 10, 20", pk.Keys, pk.Offered, pk.AbsErrorP50, pk.AbsErrorP90, pk.AbsErrorMax)
	}
	if pk.Within != 0.6 {
		t.Errorf("within %v, want 0.6 (errors 0, 1 and 4 within 4 requests, 1 %% of 400)", pk.Within)
	}
	if pk.Worst.Key != "k4" || pk.Worst.Admitted != 420 || pk.Worst.Ideal != 400 || pk.Worst.Error != 0.05 {
		t.Errorf("worst %+v, want k4 admitted 420 of ideal 400 (+5 %%)", pk.Worst)
	}
	if res.PerNode[0].Offered != 3*800 || res.PerNode[1].Admitted != int64(399+390) {
		t.Errorf("per node %+v, want keys 0, 2, 4 on a and 1, 3 on b", res.PerNode)
	}
	var b bytes.Buffer
	pk.WriteText(&b)
	for _, want := range []string{"5 offered", "p50 4, p90 10, max 20", "worst key k4", "60.0 % of keys"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text %q lacks %q", b.String(), want)
		}
	}
}

// Property: with random keys and outcomes, each key's ideal is what Ideal
// admits of that key's requests alone, the totals add up, and the grouping
// by key keeps every request once.
func TestEvaluateMatchesIdealPerKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 20 {
		keys := 1 + rng.IntN(20)
		rate := limits.Rate{Count: int64(1 + rng.IntN(10)), Window: time.Duration(1+rng.IntN(3)) * time.Second}
		l := NewLog()
		perKey := make([][]time.Duration, keys)
		at := time.Duration(0)
		for range 2000 {
			at += time.Duration(rng.IntN(5)) * time.Millisecond
			k := rng.IntN(keys)
			out := Outcome(1 + rng.IntN(3))
			l.Append(Request{At: at, Done: at + time.Duration(rng.IntN(3))*time.Millisecond, Key: uint32(k), Outcome: out})
			perKey[k] = append(perKey[k], at)
		}
		b := base + int64(rng.IntN(1e9))
		res := Evaluate(l, Run{Keys: keys, Nodes: []string{"a"}, Rate: rate, Base: b, Duration: at + time.Second, KeyName: name})
		var want int64
		offered := 0
		for _, ts := range perKey {
			if len(ts) > 0 {
				offered++
			}
			n, _ := Ideal(ts, rate, b)
			want += n
		}
		if res.Ideal != want || res.PerKey.Offered != offered || res.Offered != 2000 {
			t.Errorf("trial %d: ideal %d (want %d), keys offered %d (want %d), offered %d", trial, res.Ideal, want, res.PerKey.Offered, offered, res.Offered)
		}
	}
}

// Admissions count at their decision time: a node that admitted a key's
// room at the end of one second and again at the start of the next kept
// each second within the limit, though the answers of the first arrived
// in the second second. Figures at the answers' times are beside them.
func TestEvaluateCountsAdmissionsWhenDecided(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	l := NewLog()
	for _, r := range []struct{ at, decided, done int }{
		{980, 990, 1003}, // decided in second 0, answered in second 1
		{985, 995, 1004},
		{1000, 1001, 1002},
		{1001, 1001, 1005},
		{2500, 0, 2600}, // no decision time (a lease, the simulator): at Done
	} {
		l.Append(Request{At: ms(r.at), Decided: ms(r.decided), Done: ms(r.done), Outcome: Admitted})
	}
	res := Evaluate(l, run2(1))
	pk := res.PerKey
	if got, want := pk.MaxAlignedRatio, 1.0; got != want {
		t.Errorf("largest aligned second by decision time = %v; want %v", got, want)
	}
	if got, want := pk.MaxAlignedAnswerRatio, 2.0; got != want {
		t.Errorf("largest aligned second at the answers = %v; want %v", got, want)
	}
	if got, want := fmt.Sprint(res.PerSecond), "[2 2 1]"; got != want {
		t.Errorf("PerSecond = %s; want %s (by decision time)", got, want)
	}
	for i, tc := range []struct {
		r    Request
		want time.Duration
	}{
		{Request{Decided: ms(990), Done: ms(1003)}, ms(990)},
		{Request{Done: ms(1003)}, ms(1003)},
	} {
		if got := tc.r.DecidedAt(); got != tc.want {
			t.Errorf("step %d: DecidedAt() = %v; want %v", i, got, tc.want)
		}
	}
}
