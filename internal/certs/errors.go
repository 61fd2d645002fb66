package certs

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them and name
// the offending value; test with errors.Is.
var (
	// ErrInvalidNodeID reports a node ID that is empty, longer than
	// MaxNameLen bytes, or has a byte outside [A-Za-z0-9._-].
	ErrInvalidNodeID = errors.New("quotamesh/certs: invalid node ID")
	// ErrInvalidClientName reports a client name that breaks the same rules.
	ErrInvalidClientName = errors.New("quotamesh/certs: invalid client name")
	// ErrInvalidIdentity reports a URI that is not quotamesh://node/<id> or
	// quotamesh://client/<name>.
	ErrInvalidIdentity = errors.New("quotamesh/certs: invalid identity URI")
	// ErrInvalidRole reports a role that is neither admin nor decide, or a
	// role on a node certificate.
	ErrInvalidRole = errors.New("quotamesh/certs: invalid role")
	// ErrNoIdentity reports a certificate without the expected QuotaMesh
	// identity, or with more than one.
	ErrNoIdentity = errors.New("quotamesh/certs: certificate has no usable QuotaMesh identity")
	// ErrInvalidHost reports a host that is neither an IP address nor a DNS
	// name.
	ErrInvalidHost = errors.New("quotamesh/certs: invalid host")
	// ErrInvalidValidity reports a validity period that is empty or
	// negative.
	ErrInvalidValidity = errors.New("quotamesh/certs: invalid validity")
	// ErrInvalidPEM reports PEM data that does not hold what was expected.
	ErrInvalidPEM = errors.New("quotamesh/certs: invalid PEM")
	// ErrNoCAKey reports an attempt to issue with a CA loaded without its
	// private key.
	ErrNoCAKey = errors.New("quotamesh/certs: CA private key not available")
	// ErrKeyMismatch reports a private key that does not belong to its
	// certificate.
	ErrKeyMismatch = errors.New("quotamesh/certs: private key does not match certificate")
	// ErrNotSignedByCA reports a certificate in a directory that the
	// directory's CA did not sign.
	ErrNotSignedByCA = errors.New("quotamesh/certs: certificate not signed by the CA")
	// ErrFileExists reports that WriteDir would replace an existing file
	// with different contents.
	ErrFileExists = errors.New("quotamesh/certs: file exists with different contents")
)
