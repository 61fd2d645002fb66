// Package testlog routes zerolog output to a test's log, for the tests of
// packages that log: one line per event, at warn and above unless the
// QM_TEST_LOG environment variable names another level (QM_TEST_LOG=debug).
package testlog

import (
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
)

// New returns a logger that writes to t.Log until t's cleanups run; later
// events (a goroutine that is just exiting may still log) are dropped, since
// t.Log would panic after the test ends.
func New(t testing.TB) zerolog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	level := zerolog.WarnLevel
	if l, err := zerolog.ParseLevel(os.Getenv("QM_TEST_LOG")); err == nil && l != zerolog.NoLevel {
		level = l
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "15:04:05.000"}).Level(level).With().Timestamp().Logger()
}

type writer struct {
	t    testing.TB
	done atomic.Bool
}

func (w *writer) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
