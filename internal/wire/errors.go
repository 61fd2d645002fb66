package wire

import "errors"

// Sentinel errors. Every error this package returns wraps one of them (or
// is io.EOF, for a stream that ended cleanly between frames, or wraps the
// error of a stream ReadFrame failed to read) and names the field at fault;
// test with errors.Is.
var (
	// ErrTooLarge reports a frame, string, array or count beyond its cap.
	ErrTooLarge = errors.New("quotamesh/wire: too large")
	// ErrMalformed reports bytes that are not a valid message: truncated,
	// of the wrong msgpack type, out of range, or failing the rules of the
	// message (crdt.Delta.Validate for deltas).
	ErrMalformed = errors.New("quotamesh/wire: malformed")
	// ErrVersion reports a message of a format version this build does not
	// speak.
	ErrVersion = errors.New("quotamesh/wire: unsupported version")
	// ErrUnknownType reports a message type this build does not know.
	ErrUnknownType = errors.New("quotamesh/wire: unknown message type")
)
