package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ClientSpec is a client certificate to issue: a name and its role.
type ClientSpec struct {
	Name string
	Role Role
}

// ErrSpec marks a bad NAME=ROLE client specification.
var ErrSpec = errors.New("bad client specification")

// ParseClientSpecs reads NAME=ROLE specifications (`certs init --clients`);
// a name without a role is refused, so that nobody gets admin by accident.
func ParseClientSpecs(specs []string) ([]ClientSpec, error) {
	var out []ClientSpec
	for _, s := range specs {
		name, role, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%w: --clients %q: give each client a role, NAME=admin or NAME=decide (e.g. %s=decide)", ErrSpec, s, s)
		}
		if err := ValidateClientName(name); err != nil {
			return nil, fmt.Errorf("%w: --clients %q: %w", ErrSpec, s, err)
		}
		r, err := ParseRole(role)
		if err != nil {
			return nil, fmt.Errorf("%w: --clients %q: %w", ErrSpec, s, err)
		}
		out = append(out, ClientSpec{name, r})
	}
	return out, nil
}

// NewDevSet makes a CA named caName valid for caValidity and, signed by it,
// a certificate for every node (valid for hosts) and client, each valid
// for validity: what `quotamesh certs init` writes.
func NewDevSet(caName string, nodes, hosts []string, clients []ClientSpec, validity, caValidity time.Duration) (*Set, error) {
	for _, id := range nodes {
		if err := ValidateNodeID(id); err != nil {
			return nil, fmt.Errorf("--nodes: %w", err)
		}
	}
	ca, err := NewCA(caName, caValidity)
	if err != nil {
		return nil, err
	}
	set := NewSet(ca)
	for _, id := range nodes {
		b, err := ca.IssueNode(id, hosts, validity)
		if err != nil {
			return nil, fmt.Errorf("node %q: %w", id, err)
		}
		set.Nodes[id] = b
	}
	for _, c := range clients {
		b, err := ca.IssueClient(c.Name, c.Role, validity)
		if err != nil {
			return nil, fmt.Errorf("client %q: %w", c.Name, err)
		}
		set.Clients[c.Name] = b
	}
	return set, nil
}

// Describe says who c speaks for ("CA" for a CA), its role ("-" but for
// clients), and how long it has left at now ("EXPIRED" past it), as
// `quotamesh certs show` lists them.
func Describe(c *x509.Certificate, now time.Time) (identity, role, left string, err error) {
	identity, role = "CA", "-"
	if !c.IsCA {
		id, err := IdentityOf(c)
		if err != nil {
			return "", "", "", err
		}
		identity = id.String()
		if id.Kind == KindClient {
			role = id.Role.String()
			if id.Role == RoleNone {
				role = "none (decide-only)"
			}
		}
	}
	left = c.NotAfter.Sub(now).Round(time.Hour).String()
	if now.After(c.NotAfter) {
		left = "EXPIRED"
	}
	return identity, role, left, nil
}
