package accuracy

import "time"

// Outcome is what became of one request.
type Outcome uint8

const (
	// Pending: not decided; the run ended first.
	Pending Outcome = iota
	// Admitted and Denied: the limiter's decision.
	Admitted
	Denied
	// Failed: the call returned an error, no decision.
	Failed
)

// Request is one request of a run, as the harness that offered it saw it:
// where it was decided, its outcome is filled in.
type Request struct {
	// At is the intended time, since the run's start.
	At time.Duration
	// Done is when the harness had its answer (Admitted or Denied), since
	// the start, by the harness's clock.
	Done time.Duration
	// Decided is when it was decided, since the start, by the clock of
	// whoever decided it: the node's for a decision a node made and
	// reported (quotamesh.Decision.Decided), the harness's for one the SDK
	// made alone from a lease. Zero: at Done (a simulator decides at its
	// one clock). An admission counts at Decided in every window of the
	// report: it is when the deciding window counted it.
	Decided time.Duration
	// Key is the key's number in the workload; Node the node it was offered
	// at (the SDK client of that node, or the node itself).
	Key     uint32
	Node    uint16
	Outcome Outcome
}

// DecidedAt is when r was decided, since the start: Decided, or Done when
// Decided is zero.
func (r *Request) DecidedAt() time.Duration {
	if r.Decided != 0 {
		return r.Decided
	}
	return r.Done
}

const (
	logChunkBits = 16
	logChunk     = 1 << logChunkBits
	maxLogChunks = 1 << 14
)

// MaxLog is the most requests a Log holds (about a billion).
const MaxLog = logChunk * maxLogChunks

// Log is the list of a run's requests, in the order they were offered, in
// chunks that never move: one goroutine appends, and a request handed to
// another goroutine (through a channel, which orders the writes) may have
// its outcome filled in there while the log grows. Its memory follows the
// requests (32 bytes each), never the keys.
type Log struct {
	chunks [maxLogChunks]*[logChunk]Request
	n      int
}

// NewLog returns an empty log.
func NewLog() *Log { return new(Log) }

// Append adds r and returns its index, or -1 when the log is full.
func (l *Log) Append(r Request) int {
	if l.n >= MaxLog {
		return -1
	}
	c := l.n >> logChunkBits
	if l.chunks[c] == nil {
		l.chunks[c] = new([logChunk]Request)
	}
	l.chunks[c][l.n&(logChunk-1)] = r
	l.n++
	return l.n - 1
}

// At returns request i (0 ≤ i < Len).
func (l *Log) At(i int) *Request { return &l.chunks[i>>logChunkBits][i&(logChunk-1)] }

// Len is the number of requests appended.
func (l *Log) Len() int { return l.n }
