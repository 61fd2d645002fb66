package crdt

import (
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// Defaults for a zero Config field.
const (
	// DefaultHorizon is the slots kept per key unless Config.Horizon says
	// otherwise: the longest window plus 10 slots of margin.
	DefaultHorizon = limits.MaxSlots + 10
	// MaxHorizon is the largest horizon a key may have; larger values from
	// Config.Horizon are clamped.
	MaxHorizon = 4 * limits.MaxSlots
	// DefaultGrace is how long an origin's view stays frozen at its last
	// report before it starts to slide: two sync intervals of 20 ms plus
	// 50 ms (design.md section 5).
	DefaultGrace = 90 * time.Millisecond
	// DefaultDeltaIntervals is how many delta intervals a peer may fall
	// behind before it gets a full state.
	DefaultDeltaIntervals = 64
	// DefaultMaxDeltaBytes keeps every part of a split delta, with its frame
	// header, inside the 1 MiB frame a node sends.
	DefaultMaxDeltaBytes = 1<<20 - 4096
	// MinMaxDeltaBytes is the smallest MaxDeltaBytes allowed: one part must
	// always fit its header, its sender's state and one entry with the
	// longest key.
	MinMaxDeltaBytes = 4096
	// DefaultForgetAfter is how long an origin that holds no slot must have
	// been silent before GC forgets it: the longest window plus 10 s.
	DefaultForgetAfter = limits.MaxWindow + 10*time.Second
)

// Config tunes a Store. The zero value of every field means its default;
// Validate checks the rest.
type Config struct {
	// Horizon returns how many slots to keep for key, counted back from
	// each origin's current slot. It must be at least the longest window
	// and the demand slots that Views will be asked for on that key; Views
	// never reads further back. Values are clamped to [1, MaxHorizon]. It
	// is called when a key is first seen and on every GC, so a changed
	// limit takes effect at the next GC. Nil means every key keeps
	// DefaultHorizon slots, enough for any window.
	Horizon func(key string) int
	// Grace is how long after an origin's last report its view stays frozen
	// before it slides forward with local time. Zero means DefaultGrace; at
	// most 10 s.
	Grace time.Duration
	// DeltaIntervals is how many delta intervals (ticks) a peer may lag
	// behind, in its acknowledgements, before the next delta to it is a
	// full state. Zero means DefaultDeltaIntervals; 1 to 1<<20.
	DeltaIntervals int
	// MaxEntriesPerDelta is the most entries one part of a delta carries.
	// Zero means MaxDeltaEntries (the wire limit); 1 to MaxDeltaEntries.
	MaxEntriesPerDelta int
	// MaxDeltaBytes bounds the encoded size of one part, using the
	// conservative estimate of Delta.SizeBound. Zero means
	// DefaultMaxDeltaBytes; MinMaxDeltaBytes to DefaultMaxDeltaBytes.
	MaxDeltaBytes int
	// ForgetAfter is how long an origin that holds no slot any more must
	// have been silent before GC forgets it. Zero means DefaultForgetAfter;
	// at least Grace.
	ForgetAfter time.Duration
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.DeltaIntervals == 0 {
		c.DeltaIntervals = DefaultDeltaIntervals
	}
	if c.MaxEntriesPerDelta == 0 {
		c.MaxEntriesPerDelta = MaxDeltaEntries
	}
	if c.MaxDeltaBytes == 0 {
		c.MaxDeltaBytes = DefaultMaxDeltaBytes
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = DefaultForgetAfter
	}
	return c
}

// Validate reports the first field out of range, naming it and its value.
// Zero fields are valid: they mean the default.
func (c Config) Validate() error {
	d := c.withDefaults()
	switch {
	case d.Grace < 0 || d.Grace > 10*time.Second:
		return fmt.Errorf("%w: Grace %v out of range [0, 10s]", ErrInvalidConfig, c.Grace)
	case d.DeltaIntervals < 1 || d.DeltaIntervals > 1<<20:
		return fmt.Errorf("%w: DeltaIntervals %d out of range [1, %d]", ErrInvalidConfig, c.DeltaIntervals, 1<<20)
	case d.MaxEntriesPerDelta < 1 || d.MaxEntriesPerDelta > MaxDeltaEntries:
		return fmt.Errorf("%w: MaxEntriesPerDelta %d out of range [1, %d]", ErrInvalidConfig, c.MaxEntriesPerDelta, MaxDeltaEntries)
	case d.MaxDeltaBytes < MinMaxDeltaBytes || d.MaxDeltaBytes > DefaultMaxDeltaBytes:
		return fmt.Errorf("%w: MaxDeltaBytes %d out of range [%d, %d]", ErrInvalidConfig, c.MaxDeltaBytes, MinMaxDeltaBytes, DefaultMaxDeltaBytes)
	case d.ForgetAfter < d.Grace:
		return fmt.Errorf("%w: ForgetAfter %v is shorter than Grace %v", ErrInvalidConfig, c.ForgetAfter, d.Grace)
	}
	return nil
}
