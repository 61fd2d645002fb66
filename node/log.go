package node

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// levelHook discards events below a level that Reload may change. It sits
// on the node's base logger, so every sub-logger (and the transport's and
// Raft's, which derive from it) follows it. Events below the level are
// built and then discarded, which costs a little on debug logs; nothing on
// the request path logs.
type levelHook struct{ level atomic.Int32 }

func newLevelHook(l zerolog.Level) *levelHook {
	h := &levelHook{}
	h.set(l)
	return h
}

func (h *levelHook) set(l zerolog.Level) { h.level.Store(int32(l)) }

func (h *levelHook) get() zerolog.Level { return zerolog.Level(h.level.Load()) }

// Run implements zerolog.Hook.
func (h *levelHook) Run(e *zerolog.Event, l zerolog.Level, _ string) {
	if l != zerolog.NoLevel && l < h.get() {
		e.Discard()
	}
}

// logLimiter lets a message through at most once per interval per key, so
// that a fault (a peer sending garbage every tick) cannot flood the logs.
// It counts what it suppressed, so the next message can say so.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]*limited
}

type limited struct {
	at         time.Time
	suppressed int
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, last: make(map[string]*limited)}
}

// allow reports whether a message for key may be logged at now, and how
// many were suppressed since the last one that was.
func (l *logLimiter) allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.last[key]
	if e == nil {
		l.last[key] = &limited{at: now}
		return true, 0
	}
	if now.Sub(e.at) < l.every {
		e.suppressed++
		return false, 0
	}
	s := e.suppressed
	e.at, e.suppressed = now, 0
	return true, s
}

// prune forgets keys quiet for a minute, so that the map stays as small as
// the set of peers and reasons that misbehave now.
func (l *logLimiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, e := range l.last {
		if now.Sub(e.at) > time.Minute {
			delete(l.last, k)
		}
	}
}
