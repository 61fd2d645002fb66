// Package lograte keeps a fault from flooding the logs: a Limiter lets a
// message through at most once per interval per key (a peer and a reason,
// a direction and a reason) and counts what it held back, so the next
// message can say how many were suppressed.
//
// It is safe for concurrent use, reads no clock (callers pass the time),
// starts no goroutine, and holds one entry per key seen within the last
// minute: call Prune now and then (or let Allow do it when the map grows)
// so that it stays as small as the set of keys that misbehave now.
package lograte

import (
	"sync"
	"time"
)

// maxKeys bounds the entries a Limiter holds; past it, Allow forgets keys
// quiet for a minute before adding another, and lets a new key through
// unrecorded if all are recent.
const maxKeys = 4096

// Limiter lets a message through at most once per interval per key.
type Limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]*entry
}

type entry struct {
	at         time.Time
	suppressed int
}

// New returns a Limiter that lets one message per key through every
// interval.
func New(every time.Duration) *Limiter {
	return &Limiter{every: every, last: make(map[string]*entry)}
}

// Allow reports whether a message for key may be logged at now, and how
// many were suppressed since the last one that was.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.last[key]
	if e == nil {
		if len(l.last) >= maxKeys {
			l.pruneLocked(now)
			if len(l.last) >= maxKeys {
				return true, 0
			}
		}
		l.last[key] = &entry{at: now}
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

// Prune forgets keys quiet for a minute.
func (l *Limiter) Prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
}

func (l *Limiter) pruneLocked(now time.Time) {
	for k, e := range l.last {
		if now.Sub(e.at) > time.Minute {
			delete(l.last, k)
		}
	}
}
