package crdt

import (
	"math/rand/v2"
	"testing"
)

// TestSeriesModel drives a series with random puts, drops and fits and
// checks it against a map after every step: values are joins, epochs
// outside the ring's reach are refused or pushed out only when they are more
// than maxCap slots older than the newest, positions outside [lo, hi] are
// zero, and cached window sums equal a fresh sum.
func TestSeriesModel(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		maxCap := 1 + r.IntN(40)
		sr := &series{lo: 1, hi: 0}
		model := map[int64]uint64{}
		base := int64(1000)
		viewEnd, viewK := base, 1+r.IntN(maxCap)
		for step := 0; step < 400; step++ {
			switch op := r.IntN(10); {
			case op < 7:
				e := base + int64(r.IntN(3*maxCap)) - int64(maxCap)
				v := pack(uint32(r.IntN(5)), uint32(r.IntN(9)))
				v = pack(uint32(v>>32), max(uint32(v), uint32(v>>32)))
				if v == 0 {
					continue
				}
				oldHi := sr.hi
				wasEmpty := sr.empty()
				_, _, held := sr.put(e, v, maxCap)
				if !held {
					if wasEmpty || e > oldHi || oldHi-e+1 <= int64(maxCap) {
						t.Fatalf("seed %d step %d: put(%d) refused with hi %d, maxCap %d", seed, step, e, oldHi, maxCap)
					}
					continue
				}
				model[e] = join(model[e], v)
				for k := range model {
					if k < sr.hi-int64(maxCap)+1 {
						delete(model, k)
					}
				}
				if r.IntN(4) == 0 {
					base += int64(r.IntN(maxCap))
				}
			case op < 8:
				cut := base - int64(r.IntN(2*maxCap))
				sr.dropBelow(cut)
				for k := range model {
					if k < cut {
						delete(model, k)
					}
				}
			case op < 9:
				sr.fit(maxCap)
			default:
				// Mostly slide forward by a slot or two, as views do; now
				// and then jump or change the window.
				switch r.IntN(6) {
				case 0:
					viewEnd = base + int64(r.IntN(maxCap)) - int64(maxCap/2)
				case 1:
					viewK = 1 + r.IntN(maxCap)
				default:
					viewEnd += int64(r.IntN(3))
				}
				end, k := viewEnd, viewK
				got := sr.windowed(&sr.win, end, k, admittedOf)
				var want int64
				for e, v := range model {
					if e > end-int64(k) && e <= end {
						want += admittedOf(v)
					}
				}
				if got != want {
					t.Fatalf("seed %d step %d: windowed(%d, %d) = %d, want %d", seed, step, end, k, got, want)
				}
			}
			checkSeries(t, seed, step, sr, model, maxCap)
		}
	}
}

func checkSeries(t *testing.T, seed uint64, step int, sr *series, model map[int64]uint64, maxCap int) {
	t.Helper()
	if len(sr.ring) > maxCap {
		t.Fatalf("seed %d step %d: ring has %d positions, max %d", seed, step, len(sr.ring), maxCap)
	}
	for e, v := range model {
		if got := sr.get(e); got != v {
			t.Fatalf("seed %d step %d: get(%d) = %s, want %s", seed, step, e, fmtPacked(got), fmtPacked(v))
		}
	}
	if sr.empty() {
		if len(model) != 0 {
			t.Fatalf("seed %d step %d: empty series, model has %d slots", seed, step, len(model))
		}
		for p, v := range sr.ring {
			if v != 0 {
				t.Fatalf("seed %d step %d: empty series has position %d = %x", seed, step, p, v)
			}
		}
		return
	}
	if sr.hi-sr.lo+1 > int64(len(sr.ring)) {
		t.Fatalf("seed %d step %d: span [%d, %d] exceeds ring %d", seed, step, sr.lo, sr.hi, len(sr.ring))
	}
	held := 0
	for e := sr.lo; e <= sr.hi; e++ {
		if sr.get(e) != 0 {
			held++
			if _, ok := model[e]; !ok {
				t.Fatalf("seed %d step %d: series holds epoch %d the model does not", seed, step, e)
			}
		}
	}
	nonzero := 0
	for _, v := range sr.ring {
		if v != 0 {
			nonzero++
		}
	}
	if nonzero != held {
		t.Fatalf("seed %d step %d: %d non-zero positions, %d within [lo, hi]", seed, step, nonzero, held)
	}
	if sr.win.ok {
		want := sr.sum(sr.win.end-int64(sr.win.k)+1, sr.win.end, admittedOf)
		if sr.win.sum != want {
			t.Fatalf("seed %d step %d: cached window sum %d, fresh %d", seed, step, sr.win.sum, want)
		}
	}
}
