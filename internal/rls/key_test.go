package rls

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/quotamesh/quotamesh/limits"
)

func TestKey(t *testing.T) {
	for i, tc := range []struct {
		domain  string
		entries []Entry
		want    string
	}{
		{"edge", []Entry{{"remote_address", "10.1.2.3"}}, "edge:remote_address=10.1.2.3"},
		{"edge", []Entry{{"remote_address", "::1"}}, "edge:remote_address=%3A%3A1"},
		{"edge", []Entry{{"user", "a b*c=d%e"}}, "edge:user=a%20b%2Ac%3Dd%25e"},
		{"api", []Entry{{"path", "/login"}, {"method", "POST"}}, "api:path=/login:method=POST"},
		{"", []Entry{{"k", ""}}, ":k="},
		{"d", []Entry{{"k", "é\x00"}}, "d:k=%C3%A9%00"},
	} {
		got, err := Key(tc.domain, tc.entries)
		if err != nil || got != tc.want {
			t.Errorf("step %d: Key(%q, %v) = %q, %v; want %q", i, tc.domain, tc.entries, got, err, tc.want)
			continue
		}
		d, e, err := ParseKey(got)
		if err != nil || d != tc.domain || !slices.Equal(e, tc.entries) {
			t.Errorf("step %d: ParseKey(%q) = %q, %v, %v; want %q, %v", i, got, d, e, err, tc.domain, tc.entries)
		}
	}
	// A rule reads as it matches: each address its own key, under one
	// pattern.
	tb, err := limits.NewTable(limits.Rule{Pattern: "edge:remote_address=*", Rate: limits.MustParseRate("10/s")})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := Key("edge", []Entry{{"remote_address", "2001:db8::1"}})
	if r, ok := tb.Lookup(k); !ok || r.Pattern != "edge:remote_address=*" {
		t.Errorf("Lookup(%q) = %v, %v; want the per-address rule", k, r, ok)
	}
	k, _ = Key("edge", []Entry{{"remote_address", "1.2.3.4"}, {"path", "/x"}})
	if _, ok := tb.Lookup(k); !ok {
		t.Errorf("Lookup(%q): no rule; '*' matches the rest of the key too", k)
	}

	if _, err := Key("edge", nil); !errors.Is(err, limits.ErrInvalidKey) {
		t.Errorf("Key with no entries: %v; want ErrInvalidKey", err)
	}
	if _, err := Key("edge", []Entry{{"v", strings.Repeat("\x01", 100)}}); !errors.Is(err, limits.ErrInvalidKey) || !strings.Contains(err.Error(), "256") {
		t.Errorf("Key too long after escaping: %v; want ErrInvalidKey naming the bound", err)
	}
	for _, bad := range []string{"nodomain", "d:k", "d:k=%2", "d:k=%2a", "d:k=a*b", "d:k=%ZZ"} {
		if _, _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) succeeded; want an error", bad)
		}
	}
}

// FuzzKey: every descriptor maps to a valid key that reads back to it, and
// nothing ParseKey accepts fails to map back to the same key.
func FuzzKey(f *testing.F) {
	f.Add("edge", "remote_address", "10.0.0.1", "path", "/a b")
	f.Add("", "", "", "*", "%")
	f.Fuzz(func(t *testing.T, domain, k1, v1, k2, v2 string) {
		in := []Entry{{k1, v1}, {k2, v2}}
		key, err := Key(domain, in)
		if err != nil {
			if !errors.Is(err, limits.ErrInvalidKey) {
				t.Fatalf("Key: %v", err)
			}
			return
		}
		if err := limits.ValidateKey(key); err != nil {
			t.Fatalf("Key(%q, %v) = %q: %v", domain, in, key, err)
		}
		d, out, err := ParseKey(key)
		if err != nil || d != domain || !slices.Equal(out, in) {
			t.Fatalf("ParseKey(%q) = %q, %v, %v; want %q, %v", key, d, out, err, domain, in)
		}
		if again, err := Key(d, out); err != nil || again != key {
			t.Fatalf("Key(ParseKey(%q)) = %q, %v", key, again, err)
		}
	})
}
