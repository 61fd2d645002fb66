package transport

import (
	"testing"

	"github.com/quotamesh/quotamesh/internal/certs"
)

func TestIdentity(t *testing.T) {
	steps := []struct {
		from certs.Identity
		want Identity
		str  string
	}{
		{certs.Identity{}, Identity{}, ""},
		{certs.NodeIdentity("n1"), Identity{Name: "n1", Node: true}, "node/n1"},
		{certs.ClientIdentity("admin"), Identity{Name: "admin"}, "client/admin"},
	}
	for i, s := range steps {
		got := identityOf(s.from)
		if got != s.want || got.String() != s.str || got.String() != s.from.String() {
			t.Errorf("step %d: identityOf(%v) = %+v (%q); want %+v (%q)", i, s.from, got, got, s.want, s.str)
		}
	}
}
