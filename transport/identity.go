package transport

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/internal/certs"
)

// Identity is who a verified certificate speaks for, read from its one
// quotamesh:// identity URI SAN: a node (quotamesh://node/<Name>) or a
// client (quotamesh://client/<Name>), and a client's Role
// (quotamesh://role/<role>). The zero Identity is a client that presented no
// certificate, which a node only accepts with ClientPolicy.AllowAnonymous.
// Identities are comparable.
type Identity struct {
	// Name is the node ID or the client name; "" for the zero Identity.
	Name string
	// Node reports a node certificate rather than a client certificate.
	Node bool
	// Role is a client certificate's role; RoleNone for nodes, anonymous
	// clients, and client certificates issued before roles.
	Role Role
}

// Role is what a client certificate allows (see Identity.May).
type Role uint8

const (
	// RoleNone: no role in the certificate. A client certificate without
	// one (issued before roles existed) is treated as RoleDecide.
	RoleNone Role = iota
	// RoleDecide may decide and read, and change nothing.
	RoleDecide
	// RoleAdmin may also change limits and the membership.
	RoleAdmin
)

// String returns "admin", "decide" or "none".
func (r Role) String() string { return certs.Role(r).String() }

// Action is what a client asks a node to do, as far as permissions go.
type Action uint8

const (
	// ActionDecide is a decision or a lease, and the membership query the
	// SDK needs to route keys to their homes.
	ActionDecide Action = iota
	// ActionRead reads the node's status document, the limit table and
	// a key's usage.
	ActionRead
	// ActionAdminister changes the limit table or the membership, or
	// resets keys.
	ActionAdminister
)

// actionNames say what each action is, for logs and errors.
var actionNames = [...]string{ActionDecide: "decide", ActionRead: "read status, limits and key usage", ActionAdminister: "change limits or membership or reset keys"}

// String names the action for logs and errors.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// May reports whether id may take action. This is the one place the roles
// are interpreted; every listener that serves clients (the QUIC client
// protocol, and any other decision API) asks it:
//
//	identity                              decide  read  administer
//	client certificate, role admin        yes     yes   yes
//	client certificate, decide or no role yes     yes   no
//	node certificate (a tool on a node)   yes     yes   no
//	anonymous (AllowAnonymous only)       yes     no    no
//
// A node accepts an anonymous client only when its ClientPolicy allows
// anonymous clients; May does not check that, since the handshake did.
func (id Identity) May(a Action) bool {
	switch a {
	case ActionDecide:
		return true
	case ActionRead:
		return id.Name != ""
	case ActionAdminister:
		return !id.Node && id.Name != "" && id.Role == RoleAdmin
	}
	return false
}

// Why explains a refusal of a (May(a) is false) in words an operator can act
// on.
func (id Identity) Why(a Action) string {
	switch {
	case id.May(a):
		return ""
	case id.Name == "":
		return fmt.Sprintf("an anonymous client may not %s: present a client certificate", a)
	case id.Node:
		return fmt.Sprintf("node certificate %s may not %s: use a client certificate with the role it needs", id, a)
	case id.Role == RoleNone:
		return fmt.Sprintf("client certificate %s carries no role (issued before roles; treated as decide-only) and may not %s: issue it again with 'quotamesh certs issue --client %s --role admin'", id, a, id.Name)
	}
	return fmt.Sprintf("client %s has role %v and may not %s: use a certificate with role admin", id, id.Role, a)
}

// String returns "node/<id>", "client/<name>", or "" for the zero Identity.
func (id Identity) String() string {
	switch {
	case id.Name == "":
		return ""
	case id.Node:
		return "node/" + id.Name
	}
	return "client/" + id.Name
}

// identityOf is the Identity of a certificate identity.
func identityOf(id certs.Identity) Identity {
	return Identity{Name: id.Name, Node: id.Kind == certs.KindNode, Role: Role(id.Role)}
}

// VerifyClientCertificate verifies a certificate chain a client presented
// (leaf first) against the cluster CA in cas, now, for client
// authentication, and returns the Identity it speaks for: a client with its
// role, or a node. An empty chain is an error wrapping ErrCertificate (the
// caller decides whether anonymous clients are allowed). It is what the
// QUIC listener does; other listeners that take client certificates (an
// HTTPS decision API) use it so that the same certificates mean the same.
func VerifyClientCertificate(chain []*x509.Certificate, cas *x509.CertPool) (Identity, error) {
	leaf, err := verifyChain(chain, cas, x509.ExtKeyUsageClientAuth, time.Now())
	if err != nil {
		return Identity{}, err
	}
	id, err := certs.IdentityOf(leaf)
	if err != nil {
		return Identity{}, refuse(refusedIdentity, fmt.Errorf("%w: %w", ErrCertificate, err))
	}
	return identityOf(id), nil
}
