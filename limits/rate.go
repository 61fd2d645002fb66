package limits

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

const (
	// Slot is the width of one counting slot. Every window is a whole number
	// of slots.
	Slot = 100 * time.Millisecond
	// MinWindow is the shortest window a rate may have: one slot.
	MinWindow = Slot
	// MaxWindow is the longest window a rate may have: 600 slots.
	MaxWindow = 60 * time.Second
	// MaxCount is the largest count a rate may allow per window, 2^32-1
	// (4294967295). Windows keep per-slot counts in 32 bits; this bound keeps
	// them exact, because no slot can admit more than the window's count.
	MaxCount = int64(1)<<32 - 1
	// MaxSlots is the number of slots in MaxWindow.
	MaxSlots = int(MaxWindow / Slot)
)

// Rate is a limit: at most Count requests in any Window. The zero Rate is
// invalid; use ParseRate or fill both fields and call Validate.
type Rate struct {
	// Count is the number of requests admitted per window, 1 to MaxCount.
	Count int64 `msgpack:"c" json:"count" yaml:"count"`
	// Window is the window length, a multiple of Slot from MinWindow to
	// MaxWindow.
	Window time.Duration `msgpack:"w" json:"window" yaml:"window"`
}

// rateUnits are the unit words accepted after the slash, with their length.
var rateUnits = map[string]time.Duration{
	"ms": time.Millisecond, // only with a number in front: "10/100ms"
	"s":  time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
}

const rateSyntax = "a rate is COUNT/WINDOW with COUNT from 1 to 4294967295 and WINDOW a multiple of 100ms from 100ms to 60s, e.g. 1000/s, 50000/min, 10/100ms, 300/5s"

// ParseRate parses a rate written COUNT/WINDOW: "1000/s", "50000/min",
// "10/100ms", "300/5s", "120/1m30s" (any Go duration). The unit words s,
// sec, second, m, min and minute are documented aliases for one of that
// unit (Rate.String writes the short form back). Nothing else is read
// loosely: units are lower case ("10/S" is refused, naming "s"), and a rate
// holds no white space. The error names the bad text and says what is
// allowed.
func ParseRate(s string) (Rate, error) {
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return Rate{}, fmt.Errorf("%w %q: has white space at offset %d; write it without (%q); %s", ErrInvalidRate, s, i, strings.Join(strings.Fields(s), ""), rateSyntax)
	}
	countText, windowText, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%w %q: missing '/'; %s", ErrInvalidRate, s, rateSyntax)
	}
	count, err := strconv.ParseInt(countText, 10, 64)
	if err == nil && count < 0 {
		return Rate{}, fmt.Errorf("%w %q: count %q is negative; %s", ErrInvalidRate, s, countText, rateSyntax)
	}
	if err != nil || countText == "" || countText[0] == '+' || countText[0] == '-' {
		return Rate{}, fmt.Errorf("%w %q: count %q is not a whole number; %s", ErrInvalidRate, s, countText, rateSyntax)
	}
	window, err := parseWindow(windowText)
	if err != nil {
		return Rate{}, fmt.Errorf("%w %q: window %q %v; %s", ErrInvalidRate, s, windowText, err, rateSyntax)
	}
	r := Rate{Count: count, Window: window}
	if err := r.Validate(); err != nil {
		return Rate{}, err
	}
	return r, nil
}

func parseWindow(text string) (time.Duration, error) {
	if unit, ok := rateUnits[text]; ok && unit != time.Millisecond {
		return unit, nil
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		if lower := strings.ToLower(text); lower != text {
			if _, ok := rateUnits[lower]; ok || validDuration(lower) {
				return 0, fmt.Errorf("is not a duration: units are lower case, write %q", lower)
			}
		}
		return 0, fmt.Errorf("is not a duration")
	}
	return d, nil
}

func validDuration(s string) bool {
	_, err := time.ParseDuration(s)
	return err == nil
}

// MustParseRate is ParseRate for constants in tests and examples; it panics
// on a bad rate.
func MustParseRate(s string) Rate {
	r, err := ParseRate(s)
	if err != nil {
		panic(err)
	}
	return r
}

// Validate reports whether r is in range, naming the bad field.
func (r Rate) Validate() error {
	switch {
	case r.Count < 1 || r.Count > MaxCount:
		return fmt.Errorf("%w %s: count %d is out of range; %s", ErrInvalidRate, r, r.Count, rateSyntax)
	case r.Window < MinWindow || r.Window > MaxWindow:
		return fmt.Errorf("%w %s: window %v is out of range; %s", ErrInvalidRate, r, r.Window, rateSyntax)
	case r.Window%Slot != 0:
		return fmt.Errorf("%w %s: window %v is not a multiple of %v; %s", ErrInvalidRate, r, r.Window, Slot, rateSyntax)
	}
	return nil
}

// Slots is the number of slots in r's window.
func (r Rate) Slots() int { return int(r.Window / Slot) }

// PerSecond is r expressed as requests per second.
func (r Rate) PerSecond() float64 { return float64(r.Count) / r.Window.Seconds() }

// String writes r in the canonical form ParseRate reads back: "1000/s",
// "50000/min", "10/100ms", "300/5s".
func (r Rate) String() string {
	switch r.Window {
	case time.Second:
		return strconv.FormatInt(r.Count, 10) + "/s"
	case time.Minute:
		return strconv.FormatInt(r.Count, 10) + "/min"
	}
	return strconv.FormatInt(r.Count, 10) + "/" + r.Window.String()
}

// MarshalText writes r as String does, so rates read naturally in JSON and
// YAML.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses text with ParseRate.
func (r *Rate) UnmarshalText(text []byte) error {
	parsed, err := ParseRate(string(text))
	if err != nil {
		return err
	}
	*r = parsed
	return nil
}
