package rls

import (
	"errors"
	"fmt"
	"strings"

	"github.com/quotamesh/quotamesh/limits"
)

// Entry is one entry of a rate limit descriptor: a key and its value, as
// Envoy's actions produce them (remote_address=10.1.2.3,
// header_match=premium, ...).
type Entry struct {
	Key, Value string
}

// Key maps a domain and a descriptor's entries to the QuotaMesh key that
// counts them:
//
//	<domain>:<k1>=<v1>:<k2>=<v2>...
//
// Every part is escaped into the key alphabet: a byte that is not
// printable ASCII, or is one of the four bytes the format or patterns give a
// meaning ('%', ':', '=', '*'), or a space, becomes %XX (upper-case hex),
// as in URLs. So the mapping is reversible (ParseKey), two different
// descriptors never share a key, and a rule pattern matches exactly what it
// reads as: "edge:remote_address=*" gives every client address of domain
// edge a limit of its own, "edge:remote_address=*:path=%2Flogin" only the
// login path. The error, wrapping limits.ErrInvalidKey, says when the key
// would be longer than limits.MaxKeyLen bytes or the descriptor is empty.
func Key(domain string, entries []Entry) (string, error) {
	if len(entries) == 0 {
		return "", fmt.Errorf("%w: descriptor of domain %q has no entries", limits.ErrInvalidKey, clip(domain))
	}
	var b strings.Builder
	escape(&b, domain)
	for _, e := range entries {
		b.WriteByte(':')
		escape(&b, e.Key)
		b.WriteByte('=')
		escape(&b, e.Value)
		if b.Len() > limits.MaxKeyLen {
			break
		}
	}
	key := b.String()
	if len(key) > limits.MaxKeyLen {
		return "", fmt.Errorf("%w: the key of domain %q and %d entries would be %d bytes or more after escaping; at most %d are allowed: use shorter descriptor values",
			limits.ErrInvalidKey, clip(domain), len(entries), len(key), limits.MaxKeyLen)
	}
	if err := limits.ValidateKey(key); err != nil {
		return "", err // an empty domain and entries with nothing in them: "" cannot happen, ":=" can
	}
	return key, nil
}

// errNotDescriptorKey marks a key ParseKey cannot read back.
var errNotDescriptorKey = errors.New("not a descriptor key")

// ParseKey reads back what Key wrote: the domain and the entries.
func ParseKey(key string) (string, []Entry, error) {
	parts := strings.Split(key, ":")
	if len(parts) < 2 {
		return "", nil, fmt.Errorf("%w %q: no ':' after the domain", errNotDescriptorKey, clip(key))
	}
	domain, err := unescape(parts[0])
	if err != nil {
		return "", nil, fmt.Errorf("%w %q: domain: %v", errNotDescriptorKey, clip(key), err)
	}
	entries := make([]Entry, 0, len(parts)-1)
	for i, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return "", nil, fmt.Errorf("%w %q: entry %d has no '='", errNotDescriptorKey, clip(key), i+1)
		}
		var e Entry
		if e.Key, err = unescape(k); err == nil {
			e.Value, err = unescape(v)
		}
		if err != nil {
			return "", nil, fmt.Errorf("%w %q: entry %d: %v", errNotDescriptorKey, clip(key), i+1, err)
		}
		entries = append(entries, e)
	}
	return domain, entries, nil
}

const hexDigits = "0123456789ABCDEF"

// plain reports a byte that stands for itself in a key.
func plain(c byte) bool {
	return c > ' ' && c <= '~' && c != '%' && c != ':' && c != '=' && c != limits.Wildcard
}

func escape(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
}

func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		for i := 0; i < len(s); i++ {
			if !plain(s[i]) {
				return "", fmt.Errorf("byte 0x%02x at offset %d is not escaped", s[i], i)
			}
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", fmt.Errorf("'%%' at offset %d is not followed by two hex digits", i)
			}
			hi, lo := unhex(s[i+1]), unhex(s[i+2])
			if hi < 0 || lo < 0 {
				return "", fmt.Errorf("'%%' at offset %d is not followed by two upper-case hex digits", i)
			}
			b.WriteByte(byte(hi<<4 | lo))
			i += 2
		case plain(c):
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("byte 0x%02x at offset %d is not escaped", c, i)
		}
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
