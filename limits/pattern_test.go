package limits

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestValidateKey(t *testing.T) {
	good := []string{"a", "orders.create", "user:42", "a*b", strings.Repeat("k", MaxKeyLen), "!~"}
	for i, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("step %d: ValidateKey(%q) = %v, want nil", i, k, err)
		}
	}
	bad := []struct{ key, mentions string }{
		{"", "is empty"},
		{strings.Repeat("k", MaxKeyLen+1), "257 bytes"},
		{"a b", "0x20 at offset 1"},
		{"tab\t", "0x09 at offset 3"},
		{"ünï", "0xc3 at offset 0"},
		{"nul\x00", "0x00 at offset 3"},
	}
	for i, tt := range bad {
		err := ValidateKey(tt.key)
		if !errors.Is(err, ErrInvalidKey) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d: ValidateKey(%q) = %v, want ErrInvalidKey mentioning %q", i, tt.key, err, tt.mentions)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, key string
		want         bool
	}{
		{"orders.create", "orders.create", true},
		{"orders.create", "orders.create2", false},
		{"user:*", "user:42", true},
		{"user:*", "user:", false},
		{"user:*", "user", false},
		{"user:*", "user:a:b", true},
		{"*", "x", true},
		{"*:x", "a:x", true},
		{"*:x", ":x", false},
		{"a*b*c", "axbyc", true},
		{"a*b*c", "abc", false},
		{"a*b*c", "axbc", false},
		{"a*b*c", "axbbyc", true},
		{"a*b*c", "axbycc", true},
		{"a*a", "aa", false},
		{"a*a", "aaa", true},
		{"api:*:GET", "api:users:GET", true},
		{"api:*:GET", "api:users:POST", false},
		{"a*b", "a*b", true},
	}
	for i, tt := range tests {
		p, err := ParsePattern(tt.pattern)
		if err != nil {
			t.Fatalf("step %d: ParsePattern(%q) = %v", i, tt.pattern, err)
		}
		if got := p.Match(tt.key); got != tt.want {
			t.Errorf("step %d: %q.Match(%q) = %v, want %v", i, tt.pattern, tt.key, got, tt.want)
		}
	}
}

func TestParsePatternErrors(t *testing.T) {
	bad := []struct{ pattern, mentions string }{
		{"", "is empty"},
		{"a**", "adjacent wildcards"},
		{"*a*b*c*d*", "5 wildcards"},
		{"has space*", "0x20"},
	}
	for i, tt := range bad {
		_, err := ParsePattern(tt.pattern)
		if !errors.Is(err, ErrInvalidPattern) || !strings.Contains(err.Error(), tt.mentions) {
			t.Errorf("step %d: ParsePattern(%q) = %v, want ErrInvalidPattern mentioning %q", i, tt.pattern, err, tt.mentions)
		}
	}
}

// referenceMatch is an obviously correct matcher: '*' becomes ".+".
func referenceMatch(pattern, key string) bool {
	parts := strings.Split(pattern, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".+") + "$").MatchString(key)
}

// TestMatchAgreesWithReference is a property test over small alphabets, where
// overlapping literals are common.
func TestMatchAgreesWithReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	gen := func(alphabet string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for i := range 20000 {
		pattern := gen("ab*", 1+rng.IntN(7))
		p, err := ParsePattern(pattern)
		if err != nil {
			continue
		}
		key := gen("ab", 1+rng.IntN(9))
		if got, want := p.Match(key), referenceMatch(pattern, key); got != want {
			t.Fatalf("case %d: %q.Match(%q) = %v, want %v", i, pattern, key, got, want)
		}
	}
}

func FuzzPatternMatch(f *testing.F) {
	seeds := [][2]string{{"user:*", "user:42"}, {"a*b*c", "axbyc"}, {"*", "k"}, {"api:*:GET", "api:x:GET"}, {"a**", "a"}, {"exact", "exact"}}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			if !errors.Is(err, ErrInvalidPattern) {
				t.Fatalf("ParsePattern(%q) error %v does not wrap ErrInvalidPattern", pattern, err)
			}
			return
		}
		got := p.Match(key)
		if ValidateKey(key) == nil {
			if want := referenceMatch(pattern, key); got != want {
				t.Fatalf("%q.Match(%q) = %v, want %v", pattern, key, got, want)
			}
		}
	})
}
