package certs

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
	"time"
)

func TestRoles(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	steps := []struct {
		name string
		req  Request
		want Identity
	}{
		{"admin", Request{Identity: ClientIdentity("ops"), Role: RoleAdmin}, Identity{Kind: KindClient, Name: "ops", Role: RoleAdmin}},
		{"decide", Request{Identity: ClientIdentity("app"), Role: RoleDecide}, Identity{Kind: KindClient, Name: "app", Role: RoleDecide}},
		{"no role (before roles)", Request{Identity: ClientIdentity("old")}, Identity{Kind: KindClient, Name: "old"}},
		{"node", Request{Identity: NodeIdentity("n1")}, Identity{Kind: KindNode, Name: "n1"}},
	}
	for _, s := range steps {
		s.req.NotBefore, s.req.NotAfter = now, now.Add(time.Hour)
		b, err := ca.Issue(s.req)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got, err := IdentityOf(b.Cert); got != s.want || err != nil {
			t.Errorf("%s: IdentityOf = %+v, %v; want %+v", s.name, got, err, s.want)
		}
	}
	if _, err := ca.Issue(Request{Identity: NodeIdentity("n1"), Role: RoleAdmin, NotBefore: now, NotAfter: now.Add(time.Hour)}); !errors.Is(err, ErrInvalidRole) {
		t.Errorf("a node certificate with a role: %v, want ErrInvalidRole", err)
	}
	if _, err := ca.IssueClient("x", RoleNone, time.Hour); !errors.Is(err, ErrInvalidRole) {
		t.Errorf("IssueClient without a role: %v, want ErrInvalidRole", err)
	}
	for _, s := range []string{"admin", "decide"} {
		if r, err := ParseRole(s); err != nil || r.String() != s {
			t.Errorf("ParseRole(%q) = %v, %v", s, r, err)
		}
	}
	for _, s := range []string{"", "Admin", "root", "none"} {
		if _, err := ParseRole(s); !errors.Is(err, ErrInvalidRole) {
			t.Errorf("ParseRole(%q) = %v, want ErrInvalidRole", s, err)
		}
	}
}

// TestIdentityOfRoleURIs feeds IdentityOf certificates whose role URIs are
// malformed or repeated: each is refused, none grants a role.
func TestIdentityOfRoleURIs(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	client := u("quotamesh://client/app")
	steps := []struct {
		uris []*url.URL
		ok   bool
		role Role
	}{
		{[]*url.URL{client, u("quotamesh://role/admin")}, true, RoleAdmin},
		{[]*url.URL{u("quotamesh://role/decide"), client}, true, RoleDecide},
		{[]*url.URL{client, u("quotamesh://role/root")}, false, RoleNone},
		{[]*url.URL{client, u("quotamesh://role/admin?x=1")}, false, RoleNone},
		{[]*url.URL{client, u("quotamesh://role/admin"), u("quotamesh://role/decide")}, false, RoleNone},
		{[]*url.URL{client, u("quotamesh://role/admin"), u("quotamesh://role/admin")}, false, RoleNone},
		{[]*url.URL{u("quotamesh://node/n1"), u("quotamesh://role/admin")}, false, RoleNone},
		{[]*url.URL{u("quotamesh://role/admin")}, false, RoleNone},
		{[]*url.URL{client, u("https://example.com/role/admin")}, true, RoleNone},
	}
	for i, s := range steps {
		id, err := IdentityOf(&x509.Certificate{URIs: s.uris})
		if (err == nil) != s.ok || id.Role != s.role {
			t.Errorf("step %d: IdentityOf(%v) = %+v, %v; want ok %v, role %v", i, s.uris, id, err, s.ok, s.role)
		}
		if err != nil && !errors.Is(err, ErrNoIdentity) {
			t.Errorf("step %d: %v does not wrap ErrNoIdentity", i, err)
		}
	}
}
