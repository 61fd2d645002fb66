package limits

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// MaxKeyLen is the longest key or pattern, in bytes.
	MaxKeyLen = 256
	// MaxWildcards is the most '*' a pattern may hold; it bounds the cost of
	// matching.
	MaxWildcards = 4
	// Wildcard is the byte that matches one or more bytes in a pattern.
	Wildcard = '*'
)

// ValidateKey reports whether key can be rate limited: 1 to MaxKeyLen bytes,
// each printable ASCII other than space ('!' to '~').
func ValidateKey(key string) error {
	if err := checkKeyBytes(key); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidKey, clip(key), err)
	}
	return nil
}

func checkKeyBytes(s string) error {
	if len(s) == 0 {
		return fmt.Errorf("is empty; a key is 1 to %d bytes of printable ASCII without spaces", MaxKeyLen)
	}
	return CheckPrintable(s, MaxKeyLen)
}

// CheckPrintable reports whether s is 1 to max bytes of printable ASCII
// other than space ('!' to '~'): the alphabet of keys, and of node IDs,
// cluster IDs and addresses on the wire. The error says what is wrong ("is
// empty", "is 300 bytes; ...", "has byte 0x09 at offset 3; ..."), for the
// caller to wrap with what s is.
func CheckPrintable(s string, max int) error {
	if len(s) == 0 {
		return errors.New("is empty")
	}
	if len(s) > max {
		return fmt.Errorf("is %d bytes; at most %d are allowed", len(s), max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '!' || c > '~' {
			return fmt.Errorf("has byte 0x%02x at offset %d; only printable ASCII without spaces is allowed", c, i)
		}
	}
	return nil
}

// clip keeps error messages short when a caller passes a huge string.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Pattern is a compiled rule pattern: an exact key, or a key with wildcards.
// The zero Pattern matches nothing.
type Pattern struct {
	text  string
	parts []string // literal runs between wildcards; len(parts) = wildcards+1
}

// ParsePattern compiles text, which must be a valid key in which '*' stands
// for one or more bytes; at most MaxWildcards wildcards, never two adjacent.
func ParsePattern(text string) (Pattern, error) {
	if err := checkKeyBytes(text); err != nil {
		return Pattern{}, fmt.Errorf("%w %q: %v", ErrInvalidPattern, clip(text), err)
	}
	n := strings.Count(text, string(Wildcard))
	if n > MaxWildcards {
		return Pattern{}, fmt.Errorf("%w %q: has %d wildcards; at most %d are allowed", ErrInvalidPattern, clip(text), n, MaxWildcards)
	}
	if strings.Contains(text, "**") {
		return Pattern{}, fmt.Errorf("%w %q: has adjacent wildcards; write one '*' (it already matches one or more bytes)", ErrInvalidPattern, clip(text))
	}
	p := Pattern{text: text}
	if n > 0 {
		p.parts = strings.Split(text, string(Wildcard))
	}
	return p, nil
}

// String is the pattern as written.
func (p Pattern) String() string { return p.text }

// IsExact reports whether p has no wildcard.
func (p Pattern) IsExact() bool { return p.parts == nil }

// Wildcards is the number of '*' in p.
func (p Pattern) Wildcards() int {
	if p.parts == nil {
		return 0
	}
	return len(p.parts) - 1
}

// Literals is the number of non-wildcard bytes in p: the more, the more
// specific the pattern.
func (p Pattern) Literals() int { return len(p.text) - p.Wildcards() }

// Match reports whether key matches p. Each wildcard matches one or more
// bytes. Matching a pattern with w wildcards against a key of length n costs
// O(n*w) in the worst case and allocates nothing.
func (p Pattern) Match(key string) bool {
	if p.parts == nil {
		return p.text != "" && key == p.text
	}
	first, last := p.parts[0], p.parts[len(p.parts)-1]
	if !strings.HasPrefix(key, first) {
		return false
	}
	rest := key[len(first):]
	middle := p.parts[1 : len(p.parts)-1]
	// Greedy left-to-right placement is optimal for '*' globs: placing each
	// middle literal at its earliest position leaves the most room for the
	// rest. Each wildcard must swallow at least one byte.
	for _, lit := range middle {
		if len(rest) < 1 {
			return false
		}
		i := strings.Index(rest[1:], lit)
		if i < 0 {
			return false
		}
		rest = rest[1+i+len(lit):]
	}
	// The last wildcard needs at least one byte before the final literal.
	return len(rest) >= len(last)+1 && strings.HasSuffix(rest, last)
}

// moreSpecific orders patterns for lookup: exact before patterns, then more
// literal bytes, then fewer wildcards, then lexical order.
func moreSpecific(a, b Pattern) bool {
	if a.IsExact() != b.IsExact() {
		return a.IsExact()
	}
	if a.Literals() != b.Literals() {
		return a.Literals() > b.Literals()
	}
	if a.Wildcards() != b.Wildcards() {
		return a.Wildcards() < b.Wildcards()
	}
	return a.text < b.text
}
