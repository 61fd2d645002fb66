//go:build fault

package cluster_test

// Resets on real processes (design.md "Resets"): a reset is taken through
// a node of the majority while one node is cut off (reset-partition) or
// down (reset-kill), and that node must honour it when it comes back. The
// reset's floor is recorded in the history and in the fault's window, so
// that the bound checkers know which windows straddle it.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/limits"
)

// Reset nemesis parameters.
const (
	// resetAfter is how long after the cut (or the kill) the reset is
	// taken: past DeadAfter (1 s), so that the others count the node
	// unreachable and hold its frozen share, and before FenceAfter (3 s),
	// so that a cut node still admits under that share across the floor,
	// counting its slots before the floor because it has not heard of the
	// reset: the node "partitioned across the reset" of design.md.
	resetAfter = 1500 * time.Millisecond
	// resetPattern is what reset-partition resets: a pattern that matches
	// every load's key (fault.load, fault.lease) and no register key, so
	// that one floor covers both loads and the pattern path is exercised.
	// reset-kill resets each load's key by name.
	resetPattern = "fault.l*"
	// resetLeaderWait bounds the wait for the node taking the reset to
	// name a leader other than the node cut off or down (an election, when
	// that node led).
	resetLeaderWait = 15 * time.Second
	// resetApplyWait bounds how long after it comes back (heal, or restart
	// and readiness) the node that missed the reset may take to report its
	// floor: convergeWithin, what the suite gives a healed node to agree
	// with the others.
	resetApplyWait = convergeWithin
	// admitAgainSpan and admitAgainShare make the "admits again at once"
	// verdict: in the admitAgainSpan after the floor the nodes that heard
	// the reset admit at least admitAgainShare × min(what was offered to
	// them then, L). admitsAgain derives it.
	admitAgainSpan  = 500 * time.Millisecond
	admitAgainShare = 0.8
)

// resetRecord is one reset a nemesis took, as the fault window keeps it
// for the checkers (and verdicts.json shows it). Times are run times.
type resetRecord struct {
	Pattern string `json:"pattern"`
	Through string `json:"through"` // the node the reset went through
	// Away is the node cut off or down across the reset; Up the others,
	// which heard the node the reset went through at its floor.
	Away string   `json:"away"`
	Up   []string `json:"up"`
	// At is ResetResult.At, the slot edge from which every node counts the
	// pattern's admissions again; Floor is At in run time.
	At       time.Time     `json:"at"`
	Floor    time.Duration `json:"floor"`
	Index    uint64        `json:"index"`
	Pending  []string      `json:"pending,omitempty"`
	Invoke   time.Duration `json:"invoke"`
	Complete time.Duration `json:"complete"`
	// Back is when Away came back (the heal, or its restart's readiness);
	// Applied when it first reported the floor after that, zero if not
	// within resetApplyWait (Seen says what it reported last).
	Back    time.Duration `json:"back"`
	Applied time.Duration `json:"applied"`
	Seen    string        `json:"seen,omitempty"`
	Note    string        `json:"note,omitempty"`

	watched chan struct{} // closed by the goroutine watching Away after Back
}

func (r resetRecord) String() string {
	s := fmt.Sprintf("reset %s through %s: floor %v (%s), index %d, pending %v",
		r.Pattern, r.Through, r.Floor.Round(time.Millisecond), r.At.Format("15:04:05.000"), r.Index, r.Pending)
	if r.Applied > 0 {
		s += fmt.Sprintf("; %s reported the floor %v after it came back", r.Away, (r.Applied - r.Back).Round(time.Millisecond))
	} else if r.Back > 0 {
		s += fmt.Sprintf("; %s did not report the floor within %v of coming back (%s)", r.Away, resetApplyWait, r.Seen)
	}
	if r.Note != "" {
		s += "; " + r.Note
	}
	return s
}

// matches reports whether the reset's pattern matches key.
func (r resetRecord) matches(key string) bool {
	p, err := limits.ParsePattern(r.Pattern)
	return err == nil && p.Match(key)
}

// resetNemeses returns reset-partition and reset-kill, each holding its
// fault for about d in all (the reset is taken resetAfter into it).
func resetNemeses(d time.Duration) []nemesis {
	return []nemesis{
		{name: "reset-partition", bound: boundNormal, duration: d - resetAfter, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// isolate-one, and a reset through the majority while v is cut
			// off: v goes on counting its slots before the floor until Raft
			// brings it the reset at the heal.
			v := pick(c, target, rng)
			s, err := cutAll(c, func(a, b int) bool { return a == v || b == v })
			if err != nil {
				return "", nil, err
			}
			time.Sleep(resetAfter)
			rec, err := c.takeReset((v+1)%len(c.nodes), v, resetPattern)
			if err != nil {
				return "", nil, err
			}
			detail := fmt.Sprintf("%s isolated (%s); %s reset through %s %v later, floor %v; healed",
				c.nodes[v].ID, s, rec.Pattern, rec.Through, resetAfter, rec.Floor.Round(time.Millisecond))
			return detail, func() error {
				if err := c.healNet(); err != nil {
					return err
				}
				c.watchFloor(v, rec)
				return nil
			}, nil
		}},
		{name: "reset-kill", bound: boundNormal, duration: d - resetAfter, start: func(c *Cluster, target int, rng *rand.Rand) (string, func() error, error) {
			// kill -9, each load's key reset through another node while v
			// is down, v restarted on its data: it replays the resets with
			// the table before it serves.
			v := pick(c, target, rng)
			n := c.nodes[v]
			if err := n.Kill(); err != nil {
				return "", nil, err
			}
			time.Sleep(resetAfter)
			var recs []*resetRecord
			var floors []string
			for _, key := range c.keys {
				rec, err := c.takeReset((v+1)%len(c.nodes), v, key)
				if err != nil {
					return "", nil, err
				}
				recs = append(recs, rec)
				floors = append(floors, fmt.Sprintf("%s floor %v", key, rec.Floor.Round(time.Millisecond)))
			}
			if len(recs) == 0 {
				return "", nil, fmt.Errorf("reset-kill: no load key to reset")
			}
			detail := fmt.Sprintf("%s killed with SIGKILL; reset through %s %v later (%s); restarted on its data",
				n.ID, recs[0].Through, resetAfter, strings.Join(floors, ", "))
			return detail, func() error {
				if err := c.restartReady(n); err != nil {
					return err
				}
				for _, rec := range recs {
					c.watchFloor(v, rec)
				}
				return nil
			}, nil
		}},
	}
}

// takeReset resets pattern through node i while node away is cut off or
// down, records it in the history and keeps it for the fault window.
func (c *Cluster) takeReset(i, away int, pattern string) (*resetRecord, error) {
	rec := &resetRecord{Pattern: pattern, Through: c.nodes[i].ID, Away: c.nodes[away].ID}
	for j, n := range c.nodes {
		if j != away {
			rec.Up = append(rec.Up, n.ID)
		}
	}
	if err := c.awaitLeaderBesides(i, away, resetLeaderWait); err != nil {
		return nil, fmt.Errorf("reset %s through %s: %w", pattern, rec.Through, err)
	}
	began := time.Now()
	rec.Invoke = time.Duration(c.hist.now())
	var res quotamesh.ResetResult
	err := c.admin(i, func(ctx context.Context, cl *client.Client) error {
		var err error
		res, err = cl.Reset(ctx, pattern)
		return err
	})
	rec.Complete = time.Duration(c.hist.now())
	op := Op{Type: "reset", Node: rec.Through, Key: pattern, Invoke: int64(rec.Invoke), Complete: int64(rec.Complete)}
	if err != nil {
		// The reset may have been committed all the same (the SDK says so
		// of ErrUnavailable): a floor we do not know would make the
		// checkers hold its straddling windows to the normal bound. A
		// floor the node reports that begins after the call began can only
		// be this reset's.
		at, found := c.floorSince(i, pattern, began)
		if !found {
			op.Result, op.Error = "info", err.Error()
			c.hist.add(op)
			return nil, fmt.Errorf("reset %s through %s (no floor after it either): %w", pattern, rec.Through, err)
		}
		res = quotamesh.ResetResult{Pattern: pattern, At: at}
		rec.Note = fmt.Sprintf("the call failed (%v); its floor read from %s's key usage", err, rec.Through)
	}
	rec.At, rec.Index, rec.Pending = res.At, res.Index, res.Pending
	rec.Floor = res.At.Sub(c.hist.zero)
	op.Result, op.Index, op.Floor = "ok", res.Index, int64(rec.Floor)
	op.Detail = fmt.Sprintf("floor at %s, pending %v", res.At.Format(time.RFC3339Nano), res.Pending)
	c.hist.add(op)
	c.resets = append(c.resets, rec)
	if err == nil && !slices.Contains(res.Pending, rec.Away) {
		// The node meant to miss the reset confirmed it: the fault did not
		// hold, and the run would not test what it says.
		return nil, fmt.Errorf("reset %s through %s: %s confirmed applying it while cut off or down (pending %v)", pattern, rec.Through, rec.Away, res.Pending)
	}
	return rec, nil
}

// awaitLeaderBesides waits until node i names a leader other than node
// away: a reset needs a leader, and the one it had may be the node cut off
// or killed.
func (c *Cluster) awaitLeaderBesides(i, away int, within time.Duration) error {
	deadline := time.Now().Add(within)
	why := "no status"
	for time.Now().Before(deadline) {
		st, err := c.status(i)
		switch {
		case err != nil:
			why = err.Error()
		case st.Raft.Leader == "" || st.Raft.Leader == c.nodes[away].ID:
			why = fmt.Sprintf("%s names leader %q", c.nodes[i].ID, st.Raft.Leader)
		default:
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no leader besides %s within %v: %s", c.nodes[away].ID, within, why)
}

// keyStats reads key's usage as node i sees it (GET /keys/{key} on its
// admin listener).
func (c *Cluster) keyStats(i int, key string) (quotamesh.KeyStats, error) {
	var st quotamesh.KeyStats
	body, err := c.adminDo(i, http.MethodGet, "/keys/"+url.PathEscape(key))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("usage of %s on %s: %w", key, c.nodes[i].ID, err)
	}
	return st, nil
}

// floorSince returns the floor node i reports for the first load key
// pattern matches, if it begins after since; it waits up to 2 s (a floor
// is reported once its slot has begun, resetLead after the call).
func (c *Cluster) floorSince(i int, pattern string, since time.Time) (time.Time, bool) {
	r := resetRecord{Pattern: pattern}
	for _, key := range c.keys {
		if !r.matches(key) {
			continue
		}
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if st, err := c.keyStats(i, key); err == nil && st.ResetAt.After(since) {
				return st.ResetAt, true
			}
		}
		return time.Time{}, false
	}
	return time.Time{}, false
}

// watchFloor marks that node away came back now and starts watching it
// until it reports rec's floor for every load key the reset matches, or
// resetApplyWait has passed. The watch runs beside the convergence check
// instead of in the heal, so that the fault ends (and convergence is timed
// from) the heal itself.
func (c *Cluster) watchFloor(away int, rec *resetRecord) {
	rec.Back = time.Duration(c.hist.now())
	rec.watched = make(chan struct{})
	done := rec.watched
	// takeResets waits for the watch; so does the test's cleanup, before
	// the nodes are stopped, should the run end before it takes them.
	c.t.Cleanup(func() { <-done })
	go func() { // owned by the run (above)
		defer close(rec.watched)
		deadline := time.Now().Add(resetApplyWait)
		for {
			all := true
			var seen []string
			for _, key := range c.keys {
				if !rec.matches(key) {
					continue
				}
				st, err := c.keyStats(away, key)
				switch {
				case err != nil:
					all = false
					seen = append(seen, err.Error())
				case !st.ResetAt.Equal(rec.At):
					all = false
					seen = append(seen, fmt.Sprintf("%s reset at %v", key, st.ResetAt.Format("15:04:05.000")))
				}
			}
			rec.Seen = strings.Join(seen, "; ")
			if all {
				rec.Applied = time.Duration(c.hist.now())
				c.hist.event("reset-applied", rec.Away, fmt.Sprintf("%s's floor reported %v after it came back", rec.Pattern, (rec.Applied-rec.Back).Round(time.Millisecond)))
				return
			}
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

// takeResets returns the resets taken since the last call, once every
// watch of them has ended.
func (c *Cluster) takeResets() []resetRecord {
	out := make([]resetRecord, 0, len(c.resets))
	for _, r := range c.resets {
		if r.watched != nil {
			<-r.watched
		}
		out = append(out, *r)
	}
	c.resets = nil
	return out
}

// rejoinVerdicts says, for each reset of fault f, whether the node that
// missed it reported its floor within resetApplyWait of coming back: Raft
// brings it the reset with the log (design.md "Resets"), and from then on
// it counts from the same floor as the others.
func rejoinVerdicts(f faultWindow) []Verdict {
	var out []Verdict
	for _, r := range f.Resets {
		v := Verdict{Checker: "reset-rejoin", Fault: f.Name,
			Promise: fmt.Sprintf("the node cut off or down across the reset reports its floor within %v of coming back", resetApplyWait)}
		switch {
		case f.Err != "":
			v.Detail = "nemesis failed: " + f.Err
		case r.Back == 0:
			v.Detail = r.Away + " did not come back"
		default:
			v.Pass = r.Applied > 0
			v.Detail = r.String()
		}
		out = append(out, v)
	}
	return out
}

// TestSelfTestResetCheckers proves the reset checkers can fail, and that
// a reset's floor is what lets a window straddling it hold more: on a
// made-up history at 300/s (the load offered at 600/s to n2, n1 away), a
// floor at 50 s.
func TestSelfTestResetCheckers(t *testing.T) {
	const (
		buckets = 1000 // 100 s
		floorB  = 500  // the floor's bucket
	)
	// n2's admissions per bucket (of 60 offered) in the second from the
	// floor; 30 (the limit) in every other bucket.
	cases := []struct {
		name       string
		afterFloor [10]int64
		floor      bool // the fault window records the reset
		bound      bool // bound-fault passes
		admits     bool // reset-admits passes
	}{
		// The fresh window's limit in the first half second, then nothing
		// until the window slides: a window straddling the floor holds
		// up to 1.5×L.
		{"the limit at once", [10]int64{60, 60, 60, 60, 60}, true, true, true},
		// The same history with no floor known: 1.5×L breaks the normal
		// bound.
		{"no floor known", [10]int64{60, 60, 60, 60, 60}, false, false, true},
		// 1.33×L in the window from the floor.
		{"over the limit after the floor", [10]int64{60, 60, 60, 60, 60, 20, 20, 20, 20, 20}, true, false, true},
		// A sixth of what was offered admitted in the half second.
		{"slow to admit again", [10]int64{10, 10, 10, 10, 10, 30, 30, 30, 30, 30}, true, true, false},
	}
	for _, tc := range cases {
		h := newHistory([]string{"n1", "n2"})
		d := h.newLog(modeStrict, loadKeys[modeStrict])
		for b := range buckets {
			n := int64(30) // the limit, 300 per 1 s
			if b >= floorB && b < floorB+10 {
				n = tc.afterFloor[b-floorB]
			}
			d.counts[1][b].admitted.Store(n)
			d.counts[1][b].exact.Store(n)
			d.counts[1][b].denied.Store(60 - n)
		}
		d.last.Store(buckets - 1)
		f := faultWindow{Name: "reset", Bound: boundNormal, Start: h.bucketStart(floorB - 20), End: h.bucketStart(floorB + 60)}
		if tc.floor {
			f.Resets = []resetRecord{{Pattern: resetPattern, Through: "n2", Away: "n1", Up: []string{"n2"},
				At: time.Unix(0, (h.zeroEpoch+floorB)*int64(bucketWidth)), Floor: h.bucketStart(floorB)}}
		}
		bc := newBoundChecker(d, boundParams{Limit: 300, Window: time.Second}, []faultWindow{f}, 0, buckets)
		got := map[string]bool{}
		for _, v := range bc.perFault(h.bucketStart(buckets)) {
			got[v.Checker] = v.Pass
			t.Logf("%s: %v", tc.name, v)
		}
		if got["bound-fault"] != tc.bound {
			t.Errorf("%s: bound-fault pass %v, want %v", tc.name, got["bound-fault"], tc.bound)
		}
		if pass, ok := got["reset-admits"]; tc.floor && (!ok || pass != tc.admits) {
			t.Errorf("%s: reset-admits pass %v (reported: %v), want %v", tc.name, pass, ok, tc.admits)
		}
	}
}
