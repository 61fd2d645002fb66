package crdt

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSeriesModel drives a series with random puts, drops and fits and
// checks it against a map after every step: values are joins, epochs
// outside the series' reach are refused or pushed out only when they are
// more than maxCap slots older than the newest, slots more than recentSlots
// before the newest keep their admitted count only, the sparse form never
// holds more than sparseMax slots, a dense ring's positions outside what
// it holds are zero, and cached window sums equal a fresh sum. Counts are drawn small, medium and large, so that series go from
// sparse to dense and back, and rings widen and narrow.
func TestSeriesModel(t *testing.T) {
	for seed := uint64(1); seed <= uint64(seeds(300)); seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		maxCap := 1 + r.IntN(40)
		if seed%5 == 0 {
			maxCap = 600 + r.IntN(30)
		}
		sr := &series{}
		model := map[int64]uint64{}
		base := int64(1000)
		viewEnd, viewK := base, 1+r.IntN(maxCap)
		scale := []uint32{4, 300, 70_000, math.MaxUint32}[r.IntN(4)]
		sawDense := false
		for step := 0; step < 400; step++ {
			switch op := r.IntN(10); {
			case op < 7:
				e := base + int64(r.IntN(3*maxCap)) - int64(maxCap)
				if r.IntN(3) == 0 {
					// Bursts of neighbouring slots make series dense.
					e = base + int64(r.IntN(12))
				}
				v := pack(uint32(r.Uint64N(uint64(scale)+1)), uint32(r.Uint64N(uint64(scale)+1)))
				if r.IntN(8) == 0 {
					v = pack(uint32(r.IntN(3)), uint32(r.IntN(3)))
				}
				v = pack(uint32(v>>32), max(uint32(v), uint32(v>>32)))
				if v == 0 {
					continue
				}
				_, oldHi := sr.span()
				wasEmpty := sr.empty()
				old, now, held := sr.put(e, v, maxCap)
				if !held {
					if wasEmpty || e > oldHi || oldHi-e+1 <= int64(maxCap) {
						t.Fatalf("seed %d step %d: put(%d) refused with hi %d, maxCap %d", seed, step, e, oldHi, maxCap)
					}
					continue
				}
				if _, hi := sr.span(); e > hi-recentSlots && (old != model[e] || now != join(model[e], v)) {
					t.Fatalf("seed %d step %d: put(%d, %s) = %s, %s; want %s, %s", seed, step, e, fmtPacked(v), fmtPacked(old), fmtPacked(now), fmtPacked(model[e]), fmtPacked(join(model[e], v)))
				}
				_, hi := sr.span()
				if e <= hi-recentSlots {
					v = aged(v)
				}
				if v != 0 {
					model[e] = join(model[e], v)
				}
				for k := range model {
					if k < hi-int64(maxCap)+1 {
						delete(model, k)
					} else if k <= hi-recentSlots {
						if model[k] = aged(model[k]); model[k] == 0 {
							delete(model, k)
						}
					}
				}
				if r.IntN(4) == 0 {
					base += int64(r.IntN(maxCap))
				}
			case op < 8:
				cut := base - int64(r.IntN(2*maxCap))
				dropped := sr.dropBelow(cut)
				want := 0
				for k := range model {
					if k < cut {
						delete(model, k)
						want++
					}
				}
				if dropped != want {
					t.Fatalf("seed %d step %d: dropBelow(%d) = %d, want %d", seed, step, cut, dropped, want)
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
				offered := r.IntN(2) == 0
				field := admittedOf
				if offered {
					field = offeredOf
				}
				got := sr.windowed(offered, end, k)
				var want int64
				for e, v := range model {
					if e > end-int64(k) && e <= end {
						want += field(v)
					}
				}
				if got != want {
					t.Fatalf("seed %d step %d: windowed(%v, %d, %d) = %d, want %d", seed, step, offered, end, k, got, want)
				}
			}
			sawDense = sawDense || sr.d != nil
			checkSeries(t, seed, step, sr, model, maxCap)
		}
		if seed == 1 && !sawDense {
			t.Errorf("seed %d: the series never became dense", seed)
		}
	}
}

func checkSeries(t *testing.T, seed uint64, step int, sr *series, model map[int64]uint64, maxCap int) {
	t.Helper()
	for e, v := range model {
		if got := sr.get(e); got != v {
			t.Fatalf("seed %d step %d: get(%d) = %s, want %s", seed, step, e, fmtPacked(got), fmtPacked(v))
		}
	}
	held := 0
	last := int64(math.MinInt64)
	sr.each(math.MinInt64, math.MaxInt64, func(e int64, v uint64) {
		held++
		if e <= last {
			t.Fatalf("seed %d step %d: each went from epoch %d to %d", seed, step, last, e)
		}
		last = e
		if model[e] != v {
			t.Fatalf("seed %d step %d: series holds epoch %d = %s, the model %s", seed, step, e, fmtPacked(v), fmtPacked(model[e]))
		}
	})
	if held != len(model) || sr.count() != held || sr.empty() != (held == 0) {
		t.Fatalf("seed %d step %d: series holds %d slots (count %d, empty %v), model %d", seed, step, held, sr.count(), sr.empty(), len(model))
	}
	d := sr.d
	if d == nil {
		if len(sr.buf) > 2*sparseMax {
			t.Fatalf("seed %d step %d: sparse series holds %d words, max %d", seed, step, len(sr.buf), 2*sparseMax)
		}
		return
	}
	if int(d.n) > maxCap {
		t.Fatalf("seed %d step %d: ring has %d positions, max %d", seed, step, d.n, maxCap)
	}
	if len(sr.buf) != d.words() {
		t.Fatalf("seed %d step %d: rings of %d positions at %d and %d bits in %d words", seed, step, d.n, d.abits, d.obits, len(sr.buf))
	}
	if d.lo <= d.hi && d.hi-d.lo+1 > int64(d.n) {
		t.Fatalf("seed %d step %d: span [%d, %d] exceeds ring %d", seed, step, d.lo, d.hi, d.n)
	}
	// Positions that hold nothing are zero: count non-zero ones.
	adm, off := 0, 0
	for p := range int(d.n) {
		if field(sr.buf, p, d.abits) != 0 {
			adm++
		}
	}
	for p := range recentSlots {
		if field(sr.buf[d.admWords():], p, d.obits) != 0 {
			off++
		}
	}
	wantAdm, wantOff := 0, 0
	for e, v := range model {
		if v>>32 != 0 {
			wantAdm++
		}
		if e > d.hi-recentSlots && uint32(v) != 0 {
			wantOff++
		}
	}
	if adm != wantAdm || off != wantOff {
		t.Fatalf("seed %d step %d: %d non-zero admitted and %d offered positions, want %d and %d", seed, step, adm, off, wantAdm, wantOff)
	}
	for _, c := range []*sumCache{&d.win, &d.dem} {
		field := admittedOf
		if c == &d.dem {
			field = offeredOf
		}
		if c.ok {
			if want := sr.sum(c.end-int64(c.k)+1, c.end, field); c.sum != want {
				t.Fatalf("seed %d step %d: cached sum %d, fresh %d", seed, step, c.sum, want)
			}
		}
	}
}
