package node

import (
	"sync/atomic"

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
