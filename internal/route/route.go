// Package route picks the node a key's decisions go to: its home. Every
// SDK and node computes the same home for a key from the same set of nodes,
// with no coordination, by rendezvous (highest random weight) hashing: each
// node scores the key, the highest score wins. A node leaving moves only the
// keys it was home to (each to the node that scored second), a node joining
// takes only the keys it now scores highest on, and every caller that sees
// the same nodes agrees.
//
// The hash is part of the protocol: SDKs and nodes of different versions
// must agree on it, so it is spelled out here (FNV-1a of the key and of the
// node ID, mixed with SplitMix64's finalizer) and never changes within a
// major version.
//
// The package is pure: no I/O, no goroutines, no time.
package route

import "slices"

// Table is an immutable set of nodes to route among. The zero value and a
// Table of no nodes route nowhere. A Table is safe for concurrent use.
type Table struct {
	ids   []string
	seeds []uint64 // FNV-1a of each ID, in ids order
}

// New returns a table of the nodes with the given IDs; duplicates count
// once, order does not matter.
func New(ids ...string) *Table {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	t := &Table{ids: ids, seeds: make([]uint64, len(ids))}
	for i, id := range ids {
		t.seeds[i] = fnv1a(id)
	}
	return t
}

// Nodes returns the table's node IDs, sorted.
func (t *Table) Nodes() []string {
	if t == nil {
		return nil
	}
	return slices.Clone(t.ids)
}

// Len is the number of nodes.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.ids)
}

// Has reports whether id is one of the table's nodes.
func (t *Table) Has(id string) bool {
	if t == nil {
		return false
	}
	_, ok := slices.BinarySearch(t.ids, id)
	return ok
}

// Home returns key's home node, and false when the table is empty.
func (t *Table) Home(key string) (string, bool) {
	i := t.best(Hash(key), nil)
	if i < 0 {
		return "", false
	}
	return t.ids[i], true
}

// HomeOf is Home for a key whose Hash the caller already has, skipping the
// nodes for which skip returns true (nodes it cannot reach): the first
// node in the key's order that skip lets through. skip may be nil.
func (t *Table) HomeOf(h uint64, skip func(id string) bool) (string, bool) {
	i := t.best(h, skip)
	if i < 0 {
		return "", false
	}
	return t.ids[i], true
}

// Order returns every node in key's order of preference: its home first,
// then where the key goes if the home is gone, and so on.
func (t *Table) Order(key string) []string {
	if t == nil {
		return nil
	}
	h := Hash(key)
	type scored struct {
		id    string
		score uint64
	}
	s := make([]scored, len(t.ids))
	for i, id := range t.ids {
		s[i] = scored{id, Score(h, t.seeds[i])}
	}
	slices.SortFunc(s, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0 // scores of distinct IDs tie with probability 2^-64; ids are sorted and the sort is stable
	})
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i].id
	}
	return out
}

func (t *Table) best(h uint64, skip func(string) bool) int {
	if t == nil {
		return -1
	}
	best, top := -1, uint64(0)
	for i, seed := range t.seeds {
		if skip != nil && skip(t.ids[i]) {
			continue
		}
		if s := Score(h, seed); best < 0 || s > top {
			best, top = i, s
		}
	}
	return best
}

// Hash is the key's half of every score.
func Hash(key string) uint64 { return fnv1a(key) }

// Score is the weight of the node whose ID hashes to seed for the key whose
// Hash is h; the highest weight wins.
func Score(h, seed uint64) uint64 { return mix(h ^ mix(seed)) }

// fnv1a is 64-bit FNV-1a.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is SplitMix64's finalizer: every input bit reaches every output bit,
// so that FNV's weak low bits do not make some nodes win more often.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
