package client

import (
	"errors"
	"fmt"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
)

// Sentinel errors of this package. Decisions fail with the sentinels of the
// root package (quotamesh.ErrInvalidN, ErrExceedsLimit, ErrTooManyKeys,
// ErrClosed, ErrUnavailable) or of limits (ErrInvalidKey); admin helpers
// also with limits.ErrNoRule and limits.ErrInvalidRate. The errors below
// cover what no other package names. Every error returned wraps one
// sentinel, names the bad value, and is tested with errors.Is.
var (
	// ErrInvalidConfig reports an option out of range or missing (no CA,
	// no address); the message names the option and its value.
	ErrInvalidConfig = errors.New("quotamesh/client: invalid config")
	// ErrBadRequest reports a request the node refused as malformed
	// (wire.CodeBadRequest): a bug in the SDK or a version mismatch.
	ErrBadRequest = errors.New("quotamesh/client: bad request")
	// ErrForbidden reports an admin operation refused because the client's
	// certificate is not an admin's (wire.CodeForbidden).
	ErrForbidden = errors.New("quotamesh/client: forbidden")
	// ErrShuttingDown reports that the node is shutting down
	// (wire.CodeShuttingDown). Decisions move to another node on their own;
	// only admin calls see it.
	ErrShuttingDown = errors.New("quotamesh/client: node shutting down")
	// ErrInternal reports a failure inside the node (wire.CodeInternal).
	ErrInternal = errors.New("quotamesh/client: internal node error")
	// ErrCertificate reports that the nodes refused the client's
	// certificate: signed by another CA, expired, or missing where the
	// nodes require one. Retrying cannot help; Dial fails with it at once.
	ErrCertificate = errors.New("quotamesh/client: certificate refused")
	// ErrProtocol reports a node that broke the client protocol: an
	// undecodable frame, an unexpected message type, a reply to a request
	// never made. The connection is dropped and the SDK moves to another
	// node.
	ErrProtocol = errors.New("quotamesh/client: protocol violation")
)

// codeErr rebuilds the error a node reported with code c: the sentinel the
// code stands for, wrapped with the node's message. It is nil for CodeOK.
// No error string is ever compared.
func codeErr(c wire.Code, msg string) error {
	var s error
	switch c {
	case wire.CodeOK:
		return nil
	case wire.CodeInvalidKey:
		s = limits.ErrInvalidKey
	case wire.CodeInvalidN:
		s = quotamesh.ErrInvalidN
	case wire.CodeExceedsLimit:
		s = quotamesh.ErrExceedsLimit
	case wire.CodeTooManyKeys:
		s = quotamesh.ErrTooManyKeys
	case wire.CodeBadRequest:
		s = ErrBadRequest
	case wire.CodeForbidden:
		s = ErrForbidden
	case wire.CodeNoRule:
		s = limits.ErrNoRule
	case wire.CodeInvalidRate:
		s = limits.ErrInvalidRate
	case wire.CodeUnavailable:
		s = quotamesh.ErrUnavailable
	case wire.CodeShuttingDown:
		s = ErrShuttingDown
	case wire.CodeOverloaded:
		s = quotamesh.ErrOverloaded
	default: // CodeInternal, and any code a newer node may add
		s = ErrInternal
	}
	if msg == "" {
		return fmt.Errorf("quotamesh/client: node answered code %v: %w", c, s)
	}
	return fmt.Errorf("quotamesh/client: node answered: %w: %s", s, msg)
}

// isCertErr reports whether err says a node refused the client's
// certificate.
func isCertErr(err error) bool {
	return err != nil && (errors.Is(err, transport.ErrCertificateRefused) || errors.Is(err, ErrCertificate))
}

// closedErr is what calls on a closed client return.
func closedErr(op string) error {
	return fmt.Errorf("quotamesh/client: %s: %w", op, quotamesh.ErrClosed)
}
