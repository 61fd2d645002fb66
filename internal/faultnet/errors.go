package faultnet

import "errors"

// ErrInvalidFaults reports a Faults value out of range; the error names the
// field and its value. Test with errors.Is.
var ErrInvalidFaults = errors.New("quotamesh/faultnet: invalid faults")
