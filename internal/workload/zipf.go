package workload

import (
	"math"
	"math/rand/v2"
)

// zipf draws k in [1, n] with probability proportional to k^-s, for any
// s > 0, in constant memory: rejection-inversion sampling (W. Hörmann and
// G. Derflinger, "Rejection-inversion to generate variates from monotone
// discrete distributions", 1996), as Apache Commons RNG implements it.
// math/rand's Zipf needs s > 1; per-user popularity is often near 1.
type zipf struct {
	n             float64
	s             float64
	hX1, hN, skip float64
}

func newZipf(n int, s float64) *zipf {
	z := &zipf{n: float64(n), s: s}
	z.hX1 = z.hIntegral(1.5) - 1
	z.hN = z.hIntegral(float64(n) + 0.5)
	z.skip = 2 - z.hIntegralInverse(z.hIntegral(2.5)-z.h(2))
	return z
}

func (z *zipf) sample(r *rand.Rand) int {
	for {
		u := z.hN + r.Float64()*(z.hX1-z.hN)
		x := z.hIntegralInverse(u)
		k := math.Floor(x + 0.5)
		k = min(max(k, 1), z.n)
		if k-x <= z.skip || u >= z.hIntegral(k+0.5)-z.h(k) {
			return int(k)
		}
	}
}

// h is the unnormalised density x^-s.
func (z *zipf) h(x float64) float64 { return math.Exp(-z.s * math.Log(x)) }

// hIntegral is a primitive of h: (x^(1-s) - 1)/(1-s), log x at s = 1.
func (z *zipf) hIntegral(x float64) float64 {
	lx := math.Log(x)
	return expm1Over((1-z.s)*lx) * lx
}

func (z *zipf) hIntegralInverse(x float64) float64 {
	t := max(x*(1-z.s), -1) // below -1 only by rounding
	return math.Exp(log1pOver(t) * x)
}

// log1pOver is log(1+x)/x, continuous at 0.
func log1pOver(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Log1p(x) / x
	}
	return 1 - x*(0.5-x*(1.0/3-0.25*x))
}

// expm1Over is (e^x - 1)/x, continuous at 0.
func expm1Over(x float64) float64 {
	if math.Abs(x) > 1e-8 {
		return math.Expm1(x) / x
	}
	return 1 + x*0.5*(1+x/3*(1+0.25*x))
}
