package limits

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them and name
// the offending value; test with errors.Is.
var (
	// ErrInvalidRate reports a rate that does not parse or is out of range.
	ErrInvalidRate = errors.New("quotamesh/limits: invalid rate")
	// ErrInvalidKey reports a key that is empty, too long or has a byte
	// outside printable ASCII.
	ErrInvalidKey = errors.New("quotamesh/limits: invalid key")
	// ErrInvalidPattern reports a pattern that is not a valid key with
	// wildcards.
	ErrInvalidPattern = errors.New("quotamesh/limits: invalid pattern")
	// ErrDuplicateRule reports two rules with the same pattern in one table.
	ErrDuplicateRule = errors.New("quotamesh/limits: duplicate rule")
	// ErrTooManyRules reports a table larger than MaxRules.
	ErrTooManyRules = errors.New("quotamesh/limits: too many rules")
	// ErrNoRule reports that a table has no rule with the given pattern.
	ErrNoRule = errors.New("quotamesh/limits: no such rule")
	// ErrInvalidReset reports a reset whose floor is out of range, or too
	// many resets for one table.
	ErrInvalidReset = errors.New("quotamesh/limits: invalid reset")
)
