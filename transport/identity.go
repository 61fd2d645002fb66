package transport

import "github.com/quotamesh/quotamesh/internal/certs"

// Identity is who a verified certificate speaks for, read from its one
// quotamesh:// URI SAN: a node (quotamesh://node/<Name>) or a client
// (quotamesh://client/<Name>). The zero Identity is a client that presented
// no certificate. Identities are comparable.
type Identity struct {
	// Name is the node ID or the client name; "" for the zero Identity.
	Name string
	// Node reports a node certificate rather than a client certificate.
	Node bool
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
	return Identity{Name: id.Name, Node: id.Kind == certs.KindNode}
}
