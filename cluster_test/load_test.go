//go:build fault

package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/limits"
)

// Load parameters.
const (
	loadTick       = 10 * time.Millisecond // the generator's step
	loadWorkers    = 32                    // goroutines calling Allow per node
	loadQueue      = 256                   // requests waiting for a worker per node
	allowTimeout   = time.Second
	registerEvery  = 150 * time.Millisecond // pause between one process's register operations
	registerProcs  = 3
	registerTimout = 5 * time.Second
)

// registerKeys are the keys whose limit is a register (never loaded).
var registerKeys = []string{"fault.reg.a", "fault.reg.b"}

// Decision modes of the SDK the load goes through.
const (
	// modeStrict: every decision is a round trip to the node
	// (client.WithStrict).
	modeStrict = "strict"
	// modeLease: the SDK's default, deciding locally from leases of the
	// node's room (design.md §10).
	modeLease = "lease"
)

// loadKeys are the keys loaded in each mode: every mode has its own key
// and limit, so that the loads of a run are checked independently.
var loadKeys = map[string]string{modeStrict: "fault.load", modeLease: "fault.lease"}

// load is the load of one decision mode: one SDK client per node, each
// connected to its node only (client.WithNodeID), so that every node
// decides a part of the key in both modes.
type load struct {
	mode    string
	key     string
	clients []*client.Client
	log     *decisionLog
}

// loader drives each load's decisions open-loop at a fixed rate per node,
// and register operations (set and get of a key's limit, through Raft) from
// registerProcs processes through the first load's clients.
type loader struct {
	h       *History
	loads   []*load
	clients []*client.Client // for the registers
	perNode float64          // requests per second offered to each node, in each load

	stop chan struct{}
	wg   sync.WaitGroup
	seq  int64
	mu   sync.Mutex
}

func startLoader(h *History, loads []*load, perNode float64) *loader {
	l := &loader{h: h, loads: loads, clients: loads[0].clients, perNode: perNode, stop: make(chan struct{}), seq: 1000}
	for _, ld := range loads {
		for i := range ld.clients {
			q := make(chan time.Time, loadQueue)
			l.wg.Add(1)
			go l.generate(ld, q)
			for range loadWorkers {
				l.wg.Add(1)
				go l.work(ld, i, q)
			}
		}
	}
	for p := range registerProcs {
		l.wg.Add(1)
		go l.registers(p)
	}
	return l
}

// close stops every goroutine and waits for them.
func (l *loader) close() {
	close(l.stop)
	l.wg.Wait()
}

// generate places perNode requests per second on q, open-loop: a request
// that finds the queue full is shed (counted), never delayed.
func (l *loader) generate(ld *load, q chan<- time.Time) {
	defer l.wg.Done()
	defer close(q)
	t := time.NewTicker(loadTick)
	defer t.Stop()
	owed, last := 0.0, time.Now()
	for {
		select {
		case <-l.stop:
			return
		case now := <-t.C:
			owed += l.perNode * now.Sub(last).Seconds()
			last = now
			for ; owed >= 1; owed-- {
				select {
				case q <- now:
				default:
					ld.log.shed.Add(1)
				}
			}
		}
	}
}

func (l *loader) work(ld *load, i int, q <-chan time.Time) {
	defer l.wg.Done()
	for range q {
		ctx, cancel := context.WithTimeout(context.Background(), allowTimeout)
		at := time.Now()
		d, err := ld.clients[i].Allow(ctx, ld.key)
		cancel()
		ld.log.decided(i, at, time.Now(), err == nil && d.Allowed, err)
	}
}

func (l *loader) nextValue() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

// registers runs set and get operations on the register keys through a
// random node, one at a time: one porcupine process.
func (l *loader) registers(p int) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(p), uint64(time.Now().UnixNano())))
	for {
		select {
		case <-l.stop:
			return
		case <-time.After(registerEvery):
		}
		node := rng.IntN(len(l.clients))
		key := registerKeys[rng.IntN(len(registerKeys))]
		if rng.IntN(2) == 0 {
			l.set(p, node, key, l.nextValue())
		} else {
			l.get(p, node, key)
		}
	}
}

func (l *loader) set(p, node int, key string, v int64) {
	op := Op{Type: "set", Process: p, Node: l.h.nodes[node], Key: key, Value: v, Invoke: l.h.now()}
	ctx, cancel := context.WithTimeout(context.Background(), registerTimout)
	idx, err := l.clients[node].SetLimit(ctx, limits.Rule{Pattern: key, Rate: limits.Rate{Count: v, Window: time.Second}})
	cancel()
	op.Complete, op.Index = l.h.now(), idx
	if err != nil {
		// A change whose answer was lost may have been applied: unknown.
		op.Result, op.Error = "info", err.Error()
	} else {
		op.Result = "ok"
	}
	l.h.add(op)
}

func (l *loader) get(p, node int, key string) {
	op := Op{Type: "get", Process: p, Node: l.h.nodes[node], Key: key, Invoke: l.h.now()}
	ctx, cancel := context.WithTimeout(context.Background(), registerTimout)
	r, err := l.clients[node].GetLimit(ctx, key)
	cancel()
	op.Complete = l.h.now()
	switch {
	case errors.Is(err, limits.ErrNoRule):
		op.Result, op.Value = "ok", 0
	case err != nil:
		op.Result, op.Error = "fail", err.Error() // a read changes nothing
	default:
		op.Result, op.Value = "ok", r.Rate.Count
		if r.Rate.Window != time.Second {
			op.Error = fmt.Sprintf("read window %v, wrote 1s", r.Rate.Window)
		}
	}
	l.h.add(op)
}
