package certs

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// MaxNameLen is the longest node ID or client name, in bytes.
const MaxNameLen = 64

// URIScheme is the scheme of QuotaMesh identity URIs.
const URIScheme = "quotamesh"

// Kind tells a node identity from a client identity.
type Kind uint8

const (
	// KindNone is the zero Kind: no identity (an anonymous client).
	KindNone Kind = iota
	// KindNode is a cluster node: quotamesh://node/<id>.
	KindNode
	// KindClient is a client of the cluster: quotamesh://client/<name>.
	KindClient
)

// String returns "node", "client" or "none".
func (k Kind) String() string {
	switch k {
	case KindNode:
		return "node"
	case KindClient:
		return "client"
	default:
		return "none"
	}
}

// Identity is who a certificate speaks for, and for a client what it may
// do. The zero Identity is anonymous.
type Identity struct {
	Kind Kind
	// Name is the node ID or the client name.
	Name string
	// Role is a client certificate's role; RoleNone for nodes, anonymous
	// clients and client certificates issued without one.
	Role Role
}

// NodeIdentity returns the identity of node id (not validated).
func NodeIdentity(id string) Identity { return Identity{Kind: KindNode, Name: id} }

// ClientIdentity returns the identity of client name (not validated), with
// no role.
func ClientIdentity(name string) Identity { return Identity{Kind: KindClient, Name: name} }

// Same reports whether id and other name the same node or client, whatever
// their roles.
func (id Identity) Same(other Identity) bool { return id.Kind == other.Kind && id.Name == other.Name }

// IsZero reports whether the identity is anonymous.
func (id Identity) IsZero() bool { return id.Kind == KindNone }

// String returns "node/<id>", "client/<name>", or "" for the zero Identity
// (the role is not part of it).
func (id Identity) String() string {
	if id.Kind == KindNone {
		return ""
	}
	return id.Kind.String() + "/" + id.Name
}

// URI returns the identity's SAN URI, quotamesh://node/<id> or
// quotamesh://client/<name>; nil for the zero Identity.
func (id Identity) URI() *url.URL {
	if id.Kind == KindNone {
		return nil
	}
	return &url.URL{Scheme: URIScheme, Host: id.Kind.String(), Path: "/" + id.Name}
}

// Validate checks the name against the rules of its kind, and that only a
// client has a role.
func (id Identity) Validate() error {
	switch id.Kind {
	case KindNode:
		if id.Role != RoleNone {
			return fmt.Errorf("%w: node %q with role %v: only client certificates carry a role", ErrInvalidRole, truncate(id.Name), id.Role)
		}
		return ValidateNodeID(id.Name)
	case KindClient:
		if id.Role > RoleAdmin {
			return fmt.Errorf("%w: client %q with %v", ErrInvalidRole, truncate(id.Name), id.Role)
		}
		return ValidateClientName(id.Name)
	default:
		return fmt.Errorf("%w: no kind", ErrInvalidIdentity)
	}
}

// ValidateNodeID reports whether id is 1 to MaxNameLen bytes of
// [A-Za-z0-9._-]; the error wraps ErrInvalidNodeID and quotes id.
func ValidateNodeID(id string) error {
	if reason := checkName(id); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidNodeID, truncate(id), reason)
	}
	return nil
}

// ValidateClientName applies the node ID rules to a client name; the error
// wraps ErrInvalidClientName.
func ValidateClientName(name string) error {
	if reason := checkName(name); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidClientName, truncate(name), reason)
	}
	return nil
}

// checkName returns why s is not a valid name, or "".
func checkName(s string) string {
	if s == "" {
		return "empty; want 1 to 64 bytes of [A-Za-z0-9._-]"
	}
	if len(s) > MaxNameLen {
		return fmt.Sprintf("%d bytes long; want at most %d", len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return fmt.Sprintf("byte %d (%q) is not in [A-Za-z0-9._-]", i, s[i])
		}
	}
	if s == "." || s == ".." {
		return "a path element of its own; not usable as a file name"
	}
	return ""
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

// truncate keeps error messages short when given hostile input.
func truncate(s string) string {
	const limit = 80
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}

// maxURILen bounds what ParseIdentityURI looks at: the longest valid URI
// plus some slack.
const maxURILen = len("quotamesh://client/") + MaxNameLen

// ParseIdentityURI parses quotamesh://node/<id> or quotamesh://client/<name>.
// Nothing else is accepted: no user, port, query, fragment, escapes or extra
// path elements. Errors wrap ErrInvalidIdentity (and ErrInvalidNodeID or
// ErrInvalidClientName for a bad name).
func ParseIdentityURI(s string) (Identity, error) {
	if len(s) > maxURILen {
		return Identity{}, fmt.Errorf("%w %q: %d bytes long; want at most %d", ErrInvalidIdentity, truncate(s), len(s), maxURILen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("%w %q: %v", ErrInvalidIdentity, s, err)
	}
	return identityFromURL(u)
}

// identityFromURL checks a parsed URI strictly, so that one identity has one
// spelling.
func identityFromURL(u *url.URL) (Identity, error) {
	if u == nil {
		return Identity{}, fmt.Errorf("%w: nil URI", ErrInvalidIdentity)
	}
	s := u.String()
	if u.Scheme != URIScheme {
		return Identity{}, fmt.Errorf("%w %q: scheme is not %q", ErrInvalidIdentity, truncate(s), URIScheme)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" || u.RawPath != "" || u.OmitHost {
		return Identity{}, fmt.Errorf("%w %q: want exactly quotamesh://node/<id> or quotamesh://client/<name>", ErrInvalidIdentity, truncate(s))
	}
	var kind Kind
	switch u.Host {
	case "node":
		kind = KindNode
	case "client":
		kind = KindClient
	default:
		return Identity{}, fmt.Errorf("%w %q: authority %q is neither \"node\" nor \"client\"", ErrInvalidIdentity, truncate(s), truncate(u.Host))
	}
	name, ok := strings.CutPrefix(u.Path, "/")
	if !ok {
		return Identity{}, fmt.Errorf("%w %q: no name after the authority", ErrInvalidIdentity, truncate(s))
	}
	id := Identity{Kind: kind, Name: name}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w %q: %w", ErrInvalidIdentity, truncate(s), err)
	}
	return id, nil
}

// IdentityOf returns the one QuotaMesh identity in cert's URI SANs, with
// its role (quotamesh://role/<role>) if it is a client's. URIs of other
// schemes are ignored; a certificate with no identity URI, a malformed
// QuotaMesh URI, two identities or two roles is refused with an error
// wrapping ErrNoIdentity, and a node certificate with a role too. It does
// not verify the certificate.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	var found Identity
	role, roles := RoleNone, 0
	for _, u := range cert.URIs {
		if u == nil || u.Scheme != URIScheme {
			continue
		}
		if u.Host == roleAuthority {
			r, err := roleFromURL(u)
			if err != nil {
				return Identity{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
			}
			if roles++; roles > 1 {
				return Identity{}, fmt.Errorf("%w: two role URIs (%v and %v)", ErrNoIdentity, role, r)
			}
			role = r
			continue
		}
		id, err := identityFromURL(u)
		if err != nil {
			return Identity{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
		}
		if !found.IsZero() {
			return Identity{}, fmt.Errorf("%w: both %s and %s", ErrNoIdentity, found, id)
		}
		found = id
	}
	if found.IsZero() {
		return Identity{}, fmt.Errorf("%w: no %s:// URI SAN (subject %q)", ErrNoIdentity, URIScheme, truncate(cert.Subject.CommonName))
	}
	found.Role = role
	if err := found.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrNoIdentity, err)
	}
	return found, nil
}

// NodeID returns the node ID in cert's quotamesh://node/<id> URI SAN; a
// certificate whose identity is not a node is refused with ErrNoIdentity.
func NodeID(cert *x509.Certificate) (string, error) {
	return nameOf(cert, KindNode)
}

// ClientName returns the client name in cert's quotamesh://client/<name> URI
// SAN; a certificate whose identity is not a client is refused with
// ErrNoIdentity.
func ClientName(cert *x509.Certificate) (string, error) {
	return nameOf(cert, KindClient)
}

func nameOf(cert *x509.Certificate, kind Kind) (string, error) {
	id, err := IdentityOf(cert)
	if err != nil {
		return "", err
	}
	if id.Kind != kind {
		return "", fmt.Errorf("%w: certificate is for %s, want a %s", ErrNoIdentity, id, kind)
	}
	return id.Name, nil
}
