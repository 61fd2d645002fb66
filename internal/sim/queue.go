package sim

import (
	"time"

	"github.com/quotamesh/quotamesh/internal/wire"
)

type eventKind uint8

const (
	evArrival      eventKind = iota // a request arrives at node
	evTick                          // node's sync interval
	evDeliver                       // a frame from from reaches node
	evLinks                         // a partition starts or ends
	evClock                         // node's clock offset changes
	evKill                          // node dies (kill -9)
	evRevive                        // node starts again as a new incarnation
	evPause                         // node stops for offset
	evResume                        // node goes on
	evIdleClose                     // node's peers close their streams to it (it is paused)
	evReconnect                     // new streams replace node's old ones (it resumed)
	evWakeTick                      // the tick a resumed node's ticker fires at once (not periodic)
	evServeDelayed                  // the requests that waited for a resumed node
	evClientTick                    // client node's housekeeping tick
	evClientPoke                    // client node's key looks urgent
	evToNode                        // a client's request reaches node
	evToClient                      // a node's answer reaches a client
	evForward                       // a request node from sent to its key's home reaches it (key: the request's record)
)

type event struct {
	at     time.Duration
	seq    uint64 // insertion order breaks ties, for determinism
	kind   eventKind
	node   int
	from   int
	stream uint64
	offset time.Duration
	msg    wire.Message
	key    int32      // evArrival, evClientPoke: the key's number
	cm     *clientMsg // evToNode, evToClient
}

func (a *event) before(b *event) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.seq < b.seq
}

// eventQueue is a binary min-heap of events by time, then insertion order.
type eventQueue struct {
	h   []event
	seq uint64
}

func (q *eventQueue) len() int { return len(q.h) }

func (q *eventQueue) push(e event) {
	q.seq++
	e.seq = q.seq
	q.h = append(q.h, e)
	i := len(q.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.h[i].before(&q.h[p]) {
			break
		}
		q.h[i], q.h[p] = q.h[p], q.h[i]
		i = p
	}
}

func (q *eventQueue) pop() event {
	top := q.h[0]
	last := len(q.h) - 1
	q.h[0] = q.h[last]
	q.h[last] = event{}
	q.h = q.h[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(q.h) && q.h[l].before(&q.h[m]) {
			m = l
		}
		if r < len(q.h) && q.h[r].before(&q.h[m]) {
			m = r
		}
		if m == i {
			return top
		}
		q.h[i], q.h[m] = q.h[m], q.h[i]
		i = m
	}
}
