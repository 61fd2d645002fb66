package certs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseClientSpecs(t *testing.T) {
	got, err := ParseClientSpecs([]string{"admin=admin", "app=decide"})
	if err != nil || len(got) != 2 || got[0] != (ClientSpec{"admin", RoleAdmin}) || got[1] != (ClientSpec{"app", RoleDecide}) {
		t.Fatalf("ParseClientSpecs = %+v, %v", got, err)
	}
	for in, msg := range map[string]string{"app": "give each client a role", "a b=admin": `"a b=admin"`, "app=root": `"app=root"`} {
		if _, err := ParseClientSpecs([]string{in}); !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseClientSpecs(%q) = %v, want ErrSpec mentioning %q", in, err, msg)
		}
	}
}

func TestNewDevSetAndDescribe(t *testing.T) {
	set, err := NewDevSet("test CA", []string{"n1", "n2"}, []string{"127.0.0.1"}, []ClientSpec{{"ops", RoleAdmin}}, time.Hour, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Nodes) != 2 || len(set.Clients) != 1 {
		t.Fatalf("NewDevSet: %d nodes, %d clients", len(set.Nodes), len(set.Clients))
	}
	now := time.Now()
	for _, tc := range []struct {
		name         string
		pem          []byte
		ident, role  string
		leftContains string
	}{
		{"CA", set.CA.CertPEM(), "CA", "-", "2h"},
		{"node", set.Nodes["n1"].CertPEM(), "node/n1", "-", "1h"},
		{"client", set.Clients["ops"].CertPEM(), "client/ops", "admin", "1h"},
	} {
		cs, err := ParseCertificatesPEM(tc.pem)
		if err != nil {
			t.Fatal(err)
		}
		ident, role, left, err := Describe(cs[0], now)
		if err != nil || !strings.Contains(ident, tc.ident) || role != tc.role || !strings.Contains(left, tc.leftContains) {
			t.Errorf("%s: Describe = %q %q %q %v; want %q %q %q", tc.name, ident, role, left, err, tc.ident, tc.role, tc.leftContains)
		}
		if _, _, left, _ := Describe(cs[0], now.Add(3*time.Hour)); left != "EXPIRED" {
			t.Errorf("%s: three hours on, left %q, want EXPIRED", tc.name, left)
		}
	}
	if _, err := NewDevSet("x", []string{"bad id!"}, nil, nil, time.Hour, time.Hour); err == nil || !strings.Contains(err.Error(), "--nodes") {
		t.Errorf("NewDevSet with a bad node ID: %v", err)
	}
}
