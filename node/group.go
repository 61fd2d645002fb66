package node

import "sync"

// group tracks goroutines, and calls made into the node from goroutines
// that others own (the transport's client handlers), so that shutdown can
// refuse new ones and wait for those running. Every goroutine the node
// starts goes through a group, so that every goroutine has a stop signal
// and someone who waits for it.
type group struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Go runs fn in a new goroutine unless the group is closed; it reports
// whether it did.
func (g *group) Go(fn func()) bool {
	if !g.enter() {
		return false
	}
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// enter counts a call in progress unless the group is closed; a true
// result must be matched by leave.
func (g *group) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *group) leave() { g.wg.Done() }

// close refuses new goroutines and calls; it does not wait.
func (g *group) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// wait waits for every goroutine and call in progress. Call close first, or
// new ones may start while it waits.
func (g *group) wait() { g.wg.Wait() }

// closeAndWait is close then wait.
func (g *group) closeAndWait() {
	g.close()
	g.wait()
}
