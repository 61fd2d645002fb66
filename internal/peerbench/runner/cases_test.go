package runner

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/loadgen"
	"github.com/quotamesh/quotamesh/internal/workload"
	"github.com/quotamesh/quotamesh/limits"
)

// keyLog is a limiter that admits every call and notes the keys it was
// called with; next, if set, makes the call.
type keyLog struct {
	mu   sync.Mutex
	keys []string
	next quotamesh.Limiter
}

func (k *keyLog) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return k.AllowN(ctx, key, 1)
}

func (k *keyLog) AllowN(ctx context.Context, key string, n int64) (quotamesh.Decision, error) {
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
	if k.next != nil {
		return k.next.AllowN(ctx, key, n)
	}
	return quotamesh.Decision{Allowed: true}, nil
}

func (k *keyLog) Close() error { return nil }

// The recorders draw the arrivals loadgen offers: with the generator
// making the calls itself (in order), every node's recorder names the key
// loadgen named, call for call, and has a record for every call.
func TestRecordersFollowLoadgen(t *testing.T) {
	rate, err := limits.ParseRate("10/s")
	if err != nil {
		t.Fatal(err)
	}
	for _, zipf := range []bool{false, true} {
		t.Run(fmt.Sprintf("zipf=%v", zipf), func(t *testing.T) {
			const nodes = 3
			inner := make([]*keyLog, nodes)
			tg := target{system: Gubernator, lims: make([]quotamesh.Limiter, nodes)}
			for i := range inner {
				inner[i] = &keyLog{}
				tg.lims[i] = inner[i]
			}
			ws := workload.Spec{Nodes: nodes, Rule: "user:t*", Keys: 50, Limit: rate, Zipf: zipf, ZipfExponent: 1,
				Rate: 2000, Duration: 300 * time.Millisecond, Seed: 7}
			spec := loadgen.Spec{Workload: ws, Name: "uniform", MaxLag: loadgen.DefaultMaxLag, Tick: tick}
			recs, lims, err := recorders(tg, spec)
			if err != nil {
				t.Fatal(err)
			}
			outer := make([]quotamesh.Limiter, nodes)
			called := make([]*keyLog, nodes)
			for i := range lims {
				called[i] = &keyLog{next: lims[i]}
				outer[i] = called[i]
			}
			now := time.Now()
			for _, r := range recs {
				r.StartLoad(now)
			}
			rep := loadgen.Run(context.Background(), outer, []string{"a", "b", "c"}, spec)
			if rep.FirstError != "" || rep.Unsent > 0 {
				t.Fatalf("load: first error %q, %d unsent", rep.FirstError, rep.Unsent)
			}
			total := 0
			for i := range nodes {
				if !slices.Equal(called[i].keys, inner[i].keys) {
					t.Errorf("node %d: loadgen named %d keys, the recorder %d, and not the same ones", i,
						len(called[i].keys), len(inner[i].keys))
				}
				if d := recs[i].Dropped(); d > 0 {
					t.Errorf("node %d: %d calls beyond the recorder's arrivals", i, d)
				}
				if got := len(recs[i].Records()); got != len(called[i].keys) {
					t.Errorf("node %d: %d records of %d calls", i, got, len(called[i].keys))
				}
				total += len(called[i].keys)
			}
			if int64(total) != rep.Offered || total == 0 {
				t.Errorf("%d calls, loadgen offered %d", total, rep.Offered)
			}
		})
	}
}
