package certs

import (
	"fmt"
	"net/url"
	"strings"
)

// Role is what a client certificate allows its holder to do, carried in the
// certificate as a second URI SAN, quotamesh://role/<role>, beside the
// client's identity. The CA's signature covers it like every other SAN, so
// a client cannot raise its own role.
type Role uint8

const (
	// RoleNone is a client certificate without a role URI (issued before
	// roles existed), a node certificate, or no certificate. Nodes treat a
	// client certificate without a role as decide-only.
	RoleNone Role = iota
	// RoleDecide may ask for decisions and leases and read the cluster's
	// status and limits, but change nothing.
	RoleDecide
	// RoleAdmin may also change limits and the membership.
	RoleAdmin
)

// roleAuthority is the authority of role URIs: quotamesh://role/<role>.
const roleAuthority = "role"

// roleNames are the roles' names, by value.
var roleNames = [...]string{RoleNone: "none", RoleDecide: "decide", RoleAdmin: "admin"}

// String returns "admin", "decide", or "none".
func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// ParseRole reads "admin" or "decide"; the error wraps ErrInvalidRole and
// names the value.
func ParseRole(s string) (Role, error) {
	switch s {
	case "admin":
		return RoleAdmin, nil
	case "decide":
		return RoleDecide, nil
	}
	return RoleNone, fmt.Errorf("%w %q: use admin (may change limits and membership) or decide (decisions and reads only)", ErrInvalidRole, truncate(s))
}

// URI returns the role's SAN URI, quotamesh://role/<role>; nil for RoleNone.
func (r Role) URI() *url.URL {
	if r != RoleDecide && r != RoleAdmin {
		return nil
	}
	return &url.URL{Scheme: URIScheme, Host: roleAuthority, Path: "/" + r.String()}
}

// roleFromURL reads a role URI checked as strictly as an identity URI.
func roleFromURL(u *url.URL) (Role, error) {
	s := u.String()
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "" || u.RawPath != "" || u.OmitHost {
		return RoleNone, fmt.Errorf("%w %q: want exactly quotamesh://role/admin or quotamesh://role/decide", ErrInvalidRole, truncate(s))
	}
	name, _ := strings.CutPrefix(u.Path, "/")
	r, err := ParseRole(name)
	if err != nil {
		return RoleNone, fmt.Errorf("%w (in %q)", err, truncate(s))
	}
	return r, nil
}
