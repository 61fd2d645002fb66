package node

import (
	"time"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// DefaultClientMaxWait is Config.ClientMaxWait's default: a batch of client
// requests that waited longer than this inside the node, read but not yet
// decided, is answered "overloaded" at once. It is well above what a busy
// but healthy node shows: at 25 ms, a 2,000/s load on a node run under
// the race detector beside other test processes got 12 "overloaded"
// answers of 4,000, and a container throttled by its CPU quota stalls for
// up to a quota period (100 ms by default).
const DefaultClientMaxWait = 100 * time.Millisecond

// overWait reports whether a batch of client requests waited too long in
// the node to be decided: read at readAt, looked at now (monotonic
// nanoseconds), it waited now-readAt, less the time the stream spent
// stalled on its client meanwhile (stalledNow-stalledAtRead: its replies
// could not be written, so the wait was the client's, not the node's).
// It is false when maxWait is not positive (shedding off) and when the
// clock went backwards.
//
// The rule is the node's answer to a backlog of its own: batches are
// decided in the order they were read, so a batch that waited maxWait
// means every batch behind it waits as long, and deciding it would only
// answer it later than the caller can use. Answering it at once costs no
// engine work and gives the decisions' time to the batches behind.
func overWait(readAt, stalledAtRead, now, stalledNow int64, maxWait time.Duration) bool {
	if maxWait <= 0 {
		return false
	}
	return (now-readAt)-(stalledNow-stalledAtRead) > int64(maxWait)
}

// sheddable reports whether a request may be answered "overloaded"
// without being decided. A request that settles a lease or reports
// demand carries counts the node must not lose, so it is decided whatever
// the backlog: such requests are a small share of any load.
func sheddable(r *wire.ClientRequest) bool {
	return r.SettleID == 0 && r.Offered == 0
}
