package workload

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/quotamesh/quotamesh/limits"
)

// Pattern is what a --pattern value sets: the shape and its parameters,
// and for skew90 and rotate the Hot placement.
type Pattern struct {
	// Name is the pattern's name as written (without parameters).
	Name  string
	Shape Shape
	// Hot: the pattern places its load on a hot node (skew90, rotate);
	// Rotate: it moves every DefaultRotate unless a period is given.
	Hot, Rotate        bool
	BurstOn, BurstOff  time.Duration
	FlashFrom, FlashTo float64
	FlashAt            time.Duration
}

// PatternNames lists the pattern names ParsePattern reads.
var PatternNames = []string{"uniform", "steady", "skew90", "rotate", "burst", "ramp", "flash"}

// ParsePattern reads a pattern:
//
//	uniform | steady          the base rate throughout
//	skew90                    steady, 90 % on a hot node (Hot placement)
//	rotate                    skew90 whose hot node moves (every 5 s unless --period)
//	burst[:ON[/OFF]]          on/off bursts, phases ON and OFF (default 200ms/200ms; OFF defaults to ON)
//	ramp                      0 to twice the base rate at mid-run and back
//	flash[:FROM:TO[:AT]]      FROM × the base rate, then TO × from AT (defaults 0.25, 2.5, mid-run)
func ParsePattern(text string) (Pattern, error) {
	name, args, hasArgs := strings.Cut(text, ":")
	p := Pattern{Name: name}
	noArgs := func() error {
		if hasArgs {
			return bad("pattern %q takes no parameters", name)
		}
		return nil
	}
	switch name {
	case "uniform", "steady":
		return p, noArgs()
	case "skew90":
		p.Hot = true
		return p, noArgs()
	case "rotate":
		p.Hot, p.Rotate = true, true
		return p, noArgs()
	case "ramp":
		p.Shape = Ramp
		return p, noArgs()
	case "burst":
		p.Shape = Burst
		if !hasArgs {
			return p, nil
		}
		on, off, hasOff := strings.Cut(args, "/")
		var err error
		if p.BurstOn, err = parsePhase("on", on); err != nil {
			return p, err
		}
		if hasOff {
			if p.BurstOff, err = parsePhase("off", off); err != nil {
				return p, err
			}
		}
		return p, nil
	case "flash":
		p.Shape = Flash
		if !hasArgs {
			return p, nil
		}
		parts := strings.Split(args, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return p, bad("pattern %q: want flash:FROM:TO or flash:FROM:TO:AT, e.g. flash:0.25:2.5:30s", text)
		}
		var err error
		if p.FlashFrom, err = parseLevel("from", parts[0]); err != nil {
			return p, err
		}
		if p.FlashTo, err = parseLevel("to", parts[1]); err != nil {
			return p, err
		}
		if p.FlashTo <= 0 {
			return p, bad("flash to level %q, want a positive multiple of the base rate", parts[1])
		}
		if len(parts) == 3 {
			if p.FlashAt, err = time.ParseDuration(parts[2]); err != nil || p.FlashAt <= 0 {
				return p, bad("flash step time %q, want a positive duration such as 30s", parts[2])
			}
		}
		return p, nil
	}
	return p, bad("pattern %q, use one of %s", text, strings.Join(PatternNames, ", "))
}

func parsePhase(which, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < MinPeriod || d > time.Hour {
		return 0, bad("burst %s phase %q, want a duration from %v to 1h, such as 20ms", which, s, MinPeriod)
	}
	return d, nil
}

func parseLevel(which, s string) (float64, error) {
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || !(x >= 0) || x > 1e6 {
		return 0, bad("flash %s level %q, want a multiple of the base rate from 0 to 1e6", which, s)
	}
	return x, nil
}

// Apply sets s's shape (and for skew90 and rotate its placement) from p;
// period is the hot node's period asked for (0: none given).
func (p Pattern) Apply(s *Spec, period time.Duration) {
	s.Shape, s.BurstOn, s.BurstOff = p.Shape, p.BurstOn, p.BurstOff
	s.FlashFrom, s.FlashTo, s.FlashAt = p.FlashFrom, p.FlashTo, p.FlashAt
	if p.Hot {
		s.Placement = Hot
	}
	s.Period = period
	if p.Rotate && period == 0 {
		s.Period = DefaultRotate
	}
}

// ShapeString writes s's shape as ParsePattern reads it back.
func ShapeString(s Spec) string {
	switch s.Shape {
	case Burst:
		return fmt.Sprintf("burst:%v/%v", s.BurstOn, s.BurstOff)
	case Ramp:
		return "ramp"
	case Flash:
		return fmt.Sprintf("flash:%s:%s:%v", fmtFloat(s.FlashFrom), fmtFloat(s.FlashTo), s.FlashAt)
	}
	return "steady"
}

// ParsePlacement reads spread, sticky, hot or hot:FRACTION (the hot node's
// share, default 0.9).
func ParsePlacement(text string) (Placement, float64, error) {
	name, arg, hasArg := strings.Cut(text, ":")
	switch {
	case name == "spread" && !hasArg:
		return Spread, 0, nil
	case name == "sticky" && !hasArg:
		return Sticky, 0, nil
	case name == "hot" && !hasArg:
		return Hot, 0, nil
	case name == "hot":
		f, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(f > 0 && f <= 1) {
			return 0, 0, bad("placement %q: the hot node's share %q, want more than 0 and at most 1", text, arg)
		}
		return Hot, f, nil
	}
	return 0, 0, bad("placement %q, use spread, sticky, hot or hot:FRACTION", text)
}

// PlacementString writes s's placement for reports, in ParsePlacement's form
// with the period of a moving hot node after an '@' ("hot:0.9@1s").
func PlacementString(s Spec) string {
	if s.Placement != Hot {
		return s.Placement.String()
	}
	out := "hot:" + fmtFloat(s.HotFraction)
	if s.Period > 0 {
		out += "@" + s.Period.String()
	}
	return out
}

// ParsePopularity reads uniform, zipf, zipf:EXPONENT or sweep.
func ParsePopularity(text string) (zipf bool, exponent float64, sweep bool, err error) {
	name, arg, hasArg := strings.Cut(text, ":")
	switch {
	case name == "uniform" && !hasArg:
		return false, 0, false, nil
	case name == "sweep" && !hasArg:
		return false, 0, true, nil
	case name == "zipf" && !hasArg:
		return true, DefaultZipf, false, nil
	case name == "zipf":
		e, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(e > 0 && e <= 10) {
			return false, 0, false, bad("popularity %q: exponent %q, want more than 0 and at most 10", text, arg)
		}
		return true, e, false, nil
	}
	return false, 0, false, bad("popularity %q, use uniform, zipf, zipf:EXPONENT or sweep", text)
}

// ParseArrival reads uniform (evenly spaced) or poisson.
func ParseArrival(text string) (Process, error) {
	switch text {
	case "uniform":
		return Even, nil
	case "poisson":
		return Poisson, nil
	}
	return 0, bad("arrivals %q, use uniform or poisson", text)
}

func fmtFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// Flags are the workload's command-line flags, shared by `quotamesh sim`
// and `quotamesh bench` (Register binds them). Nodes, Duration and Seed
// come from each command's own flags.
type Flags struct {
	Pattern    string
	Placement  string // "": the pattern's (spread, or hot for skew90 and rotate)
	Period     time.Duration
	Popularity string
	Arrivals   string
	Limit      string
	Rule       string
	Keys       int
	Multiplier float64
	KeyRate    float64
	Rate       float64
}

// DefaultFlags are the flags' defaults; rule is the single key's name.
func DefaultFlags(rule string) Flags {
	return Flags{Pattern: "uniform", Popularity: "uniform", Arrivals: "uniform", Limit: "1000/s", Rule: rule,
		Keys: 1, Multiplier: DefaultMultiplier}
}

// Register binds f's fields to fs as --pattern, --placement, --period,
// --popularity, --arrivals, --limit, --key, --keys, --multiplier,
// --key-rate and --rate.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Pattern, "pattern", f.Pattern, "demand in time: uniform (steady), skew90, rotate, burst[:ON[/OFF]], ramp, flash[:FROM:TO[:AT]] (see --help)")
	fs.StringVar(&f.Placement, "placement", f.Placement, "which node a request reaches: spread, sticky (key i on node i mod N), hot[:FRACTION] (default: spread; hot for skew90 and rotate)")
	fs.DurationVar(&f.Period, "period", f.Period, "with a hot node: it moves to the next node this often, at least 1ms (default: never; 5s for rotate)")
	fs.StringVar(&f.Popularity, "popularity", f.Popularity, "how requests pick among --keys: uniform, zipf, zipf:EXPONENT, or sweep (each node's requests go through its keys in turn: every key once per keys requests)")
	fs.StringVar(&f.Arrivals, "arrivals", f.Arrivals, "arrival process at each node: uniform (evenly spaced) or poisson")
	fs.StringVar(&f.Limit, "limit", f.Limit, "the limit of every key")
	fs.StringVar(&f.Rule, "key", f.Rule, "the key every request is for; with --keys, a pattern with one '*' that the key's number replaces, e.g. 'user:*' (the limit is set on it)")
	fs.IntVar(&f.Keys, "keys", f.Keys, fmt.Sprintf("how many keys under --key, 1 to %d", MaxKeys))
	fs.Float64Var(&f.Multiplier, "multiplier", f.Multiplier, "offered load over the limit, per key on average (without --rate or --key-rate)")
	fs.Float64Var(&f.KeyRate, "key-rate", f.KeyRate, "offered requests per second per key, on average over the keys (default 0: --multiplier × --limit)")
	fs.Float64Var(&f.Rate, "rate", f.Rate, "offered requests per second over all keys (default 0: --multiplier × --limit × --keys)")
}

// Spec parses the flags into a validated Spec for nodes, duration and
// seed. Its errors name the flag and the bad value.
func (f Flags) Spec(nodes int, duration time.Duration, seed uint64) (Spec, error) {
	s := Spec{Nodes: nodes, Rule: f.Rule, Keys: f.Keys, Multiplier: f.Multiplier, KeyRate: f.KeyRate, Rate: f.Rate,
		Duration: duration, Seed: seed}
	var err error
	if s.Limit, err = limits.ParseRate(f.Limit); err != nil {
		return s, fmt.Errorf("--limit: %w", err)
	}
	p, err := ParsePattern(f.Pattern)
	if err != nil {
		return s, fmt.Errorf("--pattern: %w", err)
	}
	if f.Period < 0 || f.Period > 0 && f.Period < MinPeriod {
		return s, fmt.Errorf("--period %v: %w", f.Period, bad("want at least %v", MinPeriod))
	}
	p.Apply(&s, f.Period)
	if f.Placement != "" {
		pl, frac, err := ParsePlacement(f.Placement)
		if err != nil {
			return s, fmt.Errorf("--placement: %w", err)
		}
		if p.Hot && pl != Hot {
			return s, fmt.Errorf("--placement %s: %w", f.Placement, bad("--pattern %s places its load on a hot node", p.Name))
		}
		s.Placement, s.HotFraction = pl, frac
	}
	if f.Period > 0 && s.Placement != Hot {
		return s, fmt.Errorf("--period %v: %w", f.Period, bad("only with a hot node (--placement hot, --pattern rotate)"))
	}
	if s.Zipf, s.ZipfExponent, s.Sweep, err = ParsePopularity(f.Popularity); err != nil {
		return s, fmt.Errorf("--popularity: %w", err)
	}
	if s.Arrivals, err = ParseArrival(f.Arrivals); err != nil {
		return s, fmt.Errorf("--arrivals: %w", err)
	}
	switch {
	case f.Keys < 1 || f.Keys > MaxKeys:
		return s, fmt.Errorf("--keys %d: %w", f.Keys, bad("want 1 to %d", MaxKeys))
	case !(f.Multiplier > 0) || math.IsInf(f.Multiplier, 0):
		return s, fmt.Errorf("--multiplier %v: %w", f.Multiplier, bad("want a positive number"))
	case !(f.KeyRate >= 0) || math.IsInf(f.KeyRate, 0):
		return s, fmt.Errorf("--key-rate %v: %w", f.KeyRate, bad("want 0 or a positive rate"))
	case !(f.Rate >= 0) || math.IsInf(f.Rate, 0):
		return s, fmt.Errorf("--rate %v: %w", f.Rate, bad("want 0 or a positive rate"))
	case f.Rate > 0 && f.KeyRate > 0:
		return s, fmt.Errorf("--rate %v and --key-rate %v: %w", f.Rate, f.KeyRate, bad("give one of them"))
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("workload (--key %s, --keys %d, --pattern %s): %w", f.Rule, f.Keys, f.Pattern, err)
	}
	return s.WithDefaults(), nil
}
