package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidateNodeID(t *testing.T) {
	steps := []struct {
		id string
		ok bool
	}{
		{"n1", true},
		{"node-1.eu_west", true},
		{"A", true},
		{strings.Repeat("a", 64), true},
		{"..x", true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{"a:b", false},
		{".", false},
		{"..", false},
		{"a%2F", false},
		{"a\x00", false},
	}
	for i, s := range steps {
		err := ValidateNodeID(s.id)
		if got := err == nil; got != s.ok {
			t.Errorf("step %d: ValidateNodeID(%q) = %v, want ok %v", i, s.id, err, s.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidNodeID) {
			t.Errorf("step %d: ValidateNodeID(%q) = %v, does not wrap ErrInvalidNodeID", i, s.id, err)
		}
		if err2 := ValidateClientName(s.id); (err2 == nil) != s.ok || (err2 != nil && !errors.Is(err2, ErrInvalidClientName)) {
			t.Errorf("step %d: ValidateClientName(%q) = %v, want ok %v and ErrInvalidClientName", i, s.id, err2, s.ok)
		}
	}
}

func TestParseIdentityURI(t *testing.T) {
	steps := []struct {
		uri  string
		want Identity
	}{
		{"quotamesh://node/n1", NodeIdentity("n1")},
		{"quotamesh://client/billing-api", ClientIdentity("billing-api")},
		{"quotamesh://node/a.b_c-D9", NodeIdentity("a.b_c-D9")},
		// Everything else is refused.
		{"", Identity{}},
		{"quotamesh://node/", Identity{}},
		{"quotamesh://node", Identity{}},
		{"quotamesh://node/a/b", Identity{}},
		{"quotamesh://node/a%2Fb", Identity{}},
		{"quotamesh://node/a%41", Identity{}},
		{"quotamesh://node:1/a", Identity{}},
		{"quotamesh://u@node/a", Identity{}},
		{"quotamesh://node/a?x=1", Identity{}},
		{"quotamesh://node/a?", Identity{}},
		{"quotamesh://node/a#f", Identity{}},
		{"quotamesh://server/a", Identity{}},
		{"quotamesh://NODE/a", Identity{}},
		{"quotamesh:node/a", Identity{}},
		{"quotamesh:///node/a", Identity{}},
		{"spiffe://node/a", Identity{}},
		{"quotamesh://node/" + strings.Repeat("x", 65), Identity{}},
		{"quotamesh://node/a b", Identity{}},
		{"quotamesh://node/%zz", Identity{}},
	}
	for i, s := range steps {
		got, err := ParseIdentityURI(s.uri)
		if got != s.want {
			t.Errorf("step %d: ParseIdentityURI(%q) = %v, %v, want %v", i, s.uri, got, err, s.want)
		}
		if s.want.IsZero() && !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("step %d: ParseIdentityURI(%q) error %v does not wrap ErrInvalidIdentity", i, s.uri, err)
		}
		if !s.want.IsZero() {
			if u := got.URI().String(); u != s.uri {
				t.Errorf("step %d: URI() = %q, want %q", i, u, s.uri)
			}
		}
	}
}

func TestIdentityString(t *testing.T) {
	if got := NodeIdentity("n1").String(); got != "node/n1" {
		t.Errorf("NodeIdentity(n1).String() = %q", got)
	}
	if got := ClientIdentity("c").String(); got != "client/c" {
		t.Errorf("ClientIdentity(c).String() = %q", got)
	}
	if got := (Identity{}).String(); got != "" {
		t.Errorf("zero Identity String() = %q, want empty", got)
	}
	if (Identity{}).URI() != nil {
		t.Errorf("zero Identity URI() is not nil")
	}
}

// certWithURIs makes a self-signed certificate carrying exactly uris.
func certWithURIs(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIdentityOf(t *testing.T) {
	steps := []struct {
		uris       []string
		want       Identity
		nodeID     string
		clientName string
	}{
		{[]string{"quotamesh://node/n1"}, NodeIdentity("n1"), "n1", ""},
		{[]string{"quotamesh://client/c1"}, ClientIdentity("c1"), "", "c1"},
		{[]string{"spiffe://example.org/x", "quotamesh://node/n2"}, NodeIdentity("n2"), "n2", ""},
		{nil, Identity{}, "", ""},
		{[]string{"spiffe://example.org/x"}, Identity{}, "", ""},
		{[]string{"quotamesh://node/n1", "quotamesh://node/n2"}, Identity{}, "", ""},
		{[]string{"quotamesh://node/n1", "quotamesh://client/n1"}, Identity{}, "", ""},
		{[]string{"quotamesh://node/n1", "quotamesh://node/a/b"}, Identity{}, "", ""},
		{[]string{"quotamesh://node/a%2Fb"}, Identity{}, "", ""},
	}
	for i, s := range steps {
		c := certWithURIs(t, s.uris...)
		got, err := IdentityOf(c)
		if got != s.want || (s.want.IsZero() && !errors.Is(err, ErrNoIdentity)) {
			t.Errorf("step %d: IdentityOf(%q) = %v, %v, want %v", i, s.uris, got, err, s.want)
		}
		id, err := NodeID(c)
		if id != s.nodeID || (s.nodeID == "" && !errors.Is(err, ErrNoIdentity)) {
			t.Errorf("step %d: NodeID(%q) = %q, %v, want %q", i, s.uris, id, err, s.nodeID)
		}
		name, err := ClientName(c)
		if name != s.clientName || (s.clientName == "" && !errors.Is(err, ErrNoIdentity)) {
			t.Errorf("step %d: ClientName(%q) = %q, %v, want %q", i, s.uris, name, err, s.clientName)
		}
	}
	if _, err := IdentityOf(nil); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("IdentityOf(nil) = %v, want ErrNoIdentity", err)
	}
}

func FuzzParseIdentityURI(f *testing.F) {
	for _, s := range []string{
		"quotamesh://node/n1", "quotamesh://client/c", "quotamesh://node/a%41", "quotamesh://node:1/a",
		"quotamesh://node/a?b#c", "quotamesh:opaque", "quotamesh://node/" + strings.Repeat("z", 64), "%", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentityURI(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Fatalf("ParseIdentityURI(%q) error %v does not wrap ErrInvalidIdentity", s, err)
			}
			if !id.IsZero() {
				t.Fatalf("ParseIdentityURI(%q) returned %v with error %v", s, id, err)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseIdentityURI(%q) = %v which does not validate: %v", s, id, err)
		}
		back, err := ParseIdentityURI(id.URI().String())
		if err != nil || back != id {
			t.Fatalf("ParseIdentityURI(%q) = %v; its URI %q parses back as %v, %v", s, id, id.URI(), back, err)
		}
	})
}

func FuzzValidateNodeID(f *testing.F) {
	for _, s := range []string{"n1", "", ".", "..", "a/b", strings.Repeat("a", 65), "x.y-z_0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateNodeID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidNodeID) {
				t.Fatalf("ValidateNodeID(%q) error %v does not wrap ErrInvalidNodeID", s, err)
			}
			return
		}
		// A valid ID is a valid URI path element and a safe file name.
		if id, err := ParseIdentityURI("quotamesh://node/" + s); err != nil || id != NodeIdentity(s) {
			t.Fatalf("valid node ID %q does not round-trip through its URI: %v, %v", s, id, err)
		}
		if strings.ContainsAny(s, "/\\\x00") || s == "." || s == ".." {
			t.Fatalf("valid node ID %q is not a safe file name", s)
		}
	})
}
