package crdt

import (
	"flag"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

const (
	slot = int64(limits.Slot)
	ms   = int64(time.Millisecond)
	sec  = int64(time.Second)
	// t0 is a local time on a slot edge, about 2023.
	t0 = int64(17_000_000_000) * slot
)

// seedsFlag lets property tests run longer than their default:
// go test ./crdt/ -run Property -seeds 5000.
var seedsFlag = flag.Int("seeds", 0, "iterations of each property test (0: its default)")

// seeds returns how many random cases a property test runs.
func seeds(def int) int {
	switch {
	case *seedsFlag > 0:
		return *seedsFlag
	case testing.Short():
		return max(1, def/5)
	}
	return def
}

var (
	idA  = OriginID{"a", 0xa1}
	idA2 = OriginID{"a", 0xa2}
	idB  = OriginID{"b", 0xb1}
	idC  = OriginID{"c", 0xc1}
	idD  = OriginID{"d", 0xd1}
)

func mustStore(t testing.TB, self OriginID, cfg Config) *Store {
	t.Helper()
	s, err := NewStore(self, cfg)
	if err != nil {
		t.Fatalf("NewStore(%v, %+v): %v", self, cfg, err)
	}
	return s
}

// normal returns a one-part normal delta from from, with asOf and entries of
// from (Origin index 0 is filled in).
func normal(from OriginID, asOf int64, entries ...Entry) Delta {
	for i := range entries {
		entries[i].Origin = 0
	}
	return Delta{From: from, Seq: 1, Basis: 1, Parts: 1, Origins: []OriginState{{ID: from, AsOf: asOf}}, Entries: entries}
}

func ent(key string, epoch int64, admitted, offered uint32) Entry {
	return Entry{Key: key, Epoch: epoch, Admitted: admitted, Offered: offered}
}

func mustMerge(t testing.TB, s *Store, d Delta, now int64) MergeStats {
	t.Helper()
	st, err := s.Merge(d, now)
	if err != nil {
		t.Fatalf("Merge(%+v) at %d: %v", d, now, err)
	}
	return st
}

// viewsOf returns the views of key by origin.
func viewsOf(s *Store, key string, window, demand int, now int64) map[OriginID]View {
	out := map[OriginID]View{}
	s.Views(key, window, demand, now, func(o OriginInfo, v View) { out[o.ID] = v })
	return out
}

// projection is the replicated part of a store's state: every origin's
// asOf and every slot within horizon slots before the slot of its asOf.
type projection struct {
	asOf   map[OriginID]int64
	slots  map[slotKey]uint64
	quotas map[slotKey]uint32 // keyed by the register's epoch
}

type slotKey struct {
	o   OriginID
	key string
	e   int64
}

func project(s *Store) projection {
	p := projection{asOf: map[OriginID]int64{}, slots: map[slotKey]uint64{}, quotas: map[slotKey]uint32{}}
	for id, o := range s.origins {
		if o.self || o.asOf == 0 && o.nseries == 0 {
			continue
		}
		p.asOf[id] = o.asOf
	}
	for _, ks := range s.keys {
		for i := range ks.series {
			sr := &ks.series[i]
			o := s.originOf(sr)
			if o.self {
				continue
			}
			cut := slotOf(o.asOf) - int64(ks.horizon)
			sr.each(cut, math.MaxInt64, func(e int64, v uint64) { p.slots[slotKey{o.id, ks.key, e}] = v })
			if sr.qSeq > 0 && sr.qEpoch >= cut {
				p.quotas[slotKey{o.id, ks.key, sr.qEpoch}] = sr.quota
			}
		}
	}
	return p
}

func (p projection) equal(q projection) bool {
	return maps.Equal(p.asOf, q.asOf) && maps.Equal(p.slots, q.slots) && maps.Equal(p.quotas, q.quotas)
}

func (p projection) diff(q projection) string {
	var out []string
	for k, v := range p.slots {
		if w := q.slots[k]; w != v {
			out = append(out, fmt.Sprintf("%v/%s/%d: got %s, want %s", k.o, k.key, k.e, fmtPacked(v), fmtPacked(w)))
		}
	}
	for k, w := range q.slots {
		if _, ok := p.slots[k]; !ok {
			out = append(out, fmt.Sprintf("%v/%s/%d: got nothing, want %s", k.o, k.key, k.e, fmtPacked(w)))
		}
	}
	if !maps.Equal(p.quotas, q.quotas) {
		out = append(out, fmt.Sprintf("quota registers %v, want %v", p.quotas, q.quotas))
	}
	for id, a := range p.asOf {
		if w, ok := q.asOf[id]; !ok || w != a {
			out = append(out, fmt.Sprintf("%v: asOf %d, want %d (known %v)", id, a, w, ok))
		}
	}
	for id, w := range q.asOf {
		if _, ok := p.asOf[id]; !ok {
			out = append(out, fmt.Sprintf("%v: missing, want asOf %d", id, w))
		}
	}
	slices.Sort(out)
	if len(out) > 8 {
		out = append(out[:8], fmt.Sprintf("... %d more", len(out)-8))
	}
	return "\n\t" + strings.Join(out, "\n\t")
}

func fmtPacked(v uint64) string { return fmt.Sprintf("(%d,%d)", admittedOf(v), offeredOf(v)) }
