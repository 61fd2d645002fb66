package workload

import (
	"errors"
	"testing"
	"time"
)

// FuzzParse: the parsers never panic, refuse with ErrInvalid, and what
// they accept writes back (ShapeString, PlacementString) to text they read
// as the same thing; a valid Spec from the flags yields arrivals.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"uniform", "skew90", "rotate", "burst", "burst:20ms", "burst:1s/3s", "ramp",
		"flash", "flash:0.3:5", "flash:0:10:30s", "hot", "hot:0.5", "sticky", "zipf", "zipf:1.1", "", ":", "flash:::"} {
		f.Add(s, "spread", "uniform")
	}
	f.Fuzz(func(t *testing.T, pat, place, pop string) {
		p, err := ParsePattern(pat)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParsePattern(%q) = %v, not an ErrInvalid", pat, err)
		}
		if err == nil {
			s := Spec{Duration: time.Hour}
			p.Apply(&s, 0)
			s = s.WithDefaults()
			back := ShapeString(s)
			q, err := ParsePattern(back)
			if err != nil {
				t.Fatalf("ParsePattern(%q) = %v; it wrote back %q from %q", back, err, back, pat)
			}
			s2 := Spec{Duration: time.Hour}
			q.Apply(&s2, 0)
			if s2 = s2.WithDefaults(); ShapeString(s2) != back {
				t.Fatalf("%q reads back as %q, then %q", pat, back, ShapeString(s2))
			}
		}
		pl, frac, err := ParsePlacement(place)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParsePlacement(%q) = %v, not an ErrInvalid", place, err)
		}
		if err == nil && pl == Hot && frac != 0 {
			s := Spec{Placement: Hot, HotFraction: frac}
			if _, f2, err := ParsePlacement(PlacementString(s)); err != nil || f2 != frac {
				t.Fatalf("placement %q wrote back %q: %v, %v", place, PlacementString(s), f2, err)
			}
		}
		if _, _, _, err := ParsePopularity(pop); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParsePopularity(%q) = %v, not an ErrInvalid", pop, err)
		}
		fl := DefaultFlags("user:*")
		fl.Pattern, fl.Placement, fl.Popularity, fl.Keys = pat, place, pop, 50
		if s, err := fl.Spec(3, 2*time.Second, 1); err == nil {
			g, err := NewGenerator(s)
			if err != nil {
				t.Fatalf("NewGenerator of a valid spec %+v: %v", s, err)
			}
			for range 100 {
				if _, ok := g.Next(); !ok {
					break
				}
			}
		}
	})
}
