package consensus

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/rs/zerolog"
)

// hclogAdapter lets hashicorp/raft and raft-wal log through zerolog. Raft
// repeats some warnings and errors for as long as a fault lasts (a failed
// heartbeat every few hundred milliseconds per unreachable peer), so messages
// at Warn and above are rate-limited: each distinct message is written at
// most once per logEvery, with the number suppressed in between.
type hclogAdapter struct {
	zl      zerolog.Logger
	name    string
	implied []any
	limiter *logLimiter
	// quiet, once set (when the Store starts closing), turns warnings and
	// errors into debug messages: connections failing as this node shuts
	// them down are expected, not faults.
	quiet *atomic.Bool
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// logEvery is the shortest interval between two writes of the same warning
// or error.
const logEvery = time.Second

// newHCLog adapts zl (which already carries component=raft).
func newHCLog(zl zerolog.Logger) *hclogAdapter {
	return &hclogAdapter{zl: zl, limiter: &logLimiter{last: make(map[string]*limitState)}, quiet: new(atomic.Bool)}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	var zlevel zerolog.Level
	switch level {
	case hclog.Trace:
		zlevel = zerolog.TraceLevel
	case hclog.Debug:
		zlevel = zerolog.DebugLevel
	case hclog.Info, hclog.NoLevel, hclog.DefaultLevel:
		zlevel = zerolog.InfoLevel
	case hclog.Warn:
		zlevel = zerolog.WarnLevel
	case hclog.Error:
		zlevel = zerolog.ErrorLevel
	default:
		return
	}
	if zlevel > zerolog.InfoLevel && a.quiet.Load() {
		zlevel = zerolog.DebugLevel
	}
	e := a.zl.WithLevel(zlevel)
	if e == nil { // disabled at this level, or the zero Logger
		return
	}
	var suppressed int
	if zlevel >= zerolog.WarnLevel {
		var ok bool
		if ok, suppressed = a.limiter.allow(a.name+"\x00"+msg, time.Now()); !ok {
			e.Discard()
			return
		}
	}
	if a.name != "" {
		e = e.Str("sub", a.name)
	}
	addFields(e, a.implied)
	addFields(e, args)
	if suppressed > 0 {
		e = e.Int("suppressed", suppressed)
	}
	e.Msg(msg)
}

func (a *hclogAdapter) enabled(l zerolog.Level) bool {
	return l >= a.zl.GetLevel() && l >= zerolog.GlobalLevel()
}

// addFields writes hclog's alternating key/value arguments as zerolog
// fields.
func addFields(e *zerolog.Event, args []any) {
	for i := 0; i < len(args); i += 2 {
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		if i+1 >= len(args) {
			e.Str("EXTRA_VALUE_AT_END", key)
			return
		}
		switch v := args[i+1].(type) {
		case string:
			e.Str(key, v)
		case error:
			e.AnErr(key, v)
		case time.Duration:
			e.Dur(key, v)
		case int:
			e.Int(key, v)
		case uint64:
			e.Uint64(key, v)
		case bool:
			e.Bool(key, v)
		case hclog.Format:
			if len(v) > 0 {
				if format, ok := v[0].(string); ok {
					e.Str(key, fmt.Sprintf(format, v[1:]...))
					continue
				}
			}
			e.Str(key, fmt.Sprint(v...))
		case fmt.Stringer:
			e.Str(key, v.String())
		default:
			e.Str(key, fmt.Sprint(v))
		}
	}
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) IsTrace() bool { return a.enabled(zerolog.TraceLevel) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(zerolog.DebugLevel) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(zerolog.InfoLevel) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(zerolog.WarnLevel) }
func (a *hclogAdapter) IsError() bool { return a.enabled(zerolog.ErrorLevel) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.implied }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.implied = append(append([]any(nil), a.implied...), args...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

// SetLevel is ignored: the level is the zerolog logger's.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

func (a *hclogAdapter) GetLevel() hclog.Level {
	switch l := max(a.zl.GetLevel(), zerolog.GlobalLevel()); {
	case l <= zerolog.TraceLevel:
		return hclog.Trace
	case l == zerolog.DebugLevel:
		return hclog.Debug
	case l == zerolog.InfoLevel:
		return hclog.Info
	case l == zerolog.WarnLevel:
		return hclog.Warn
	case l == zerolog.ErrorLevel:
		return hclog.Error
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return stdWriter{a}
}

// stdWriter turns lines written by a standard library logger into Info
// messages, or Warn/Error ones when they start with "[WARN]" or "[ERROR]".
type stdWriter struct{ a *hclogAdapter }

func (w stdWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimRight(p, "\n"))
	level := hclog.Info
	for prefix, l := range map[string]hclog.Level{"[ERROR]": hclog.Error, "[ERR]": hclog.Error, "[WARN]": hclog.Warn, "[DEBUG]": hclog.Debug, "[TRACE]": hclog.Trace, "[INFO]": hclog.Info} {
		if strings.HasPrefix(msg, prefix) {
			level, msg = l, strings.TrimSpace(msg[len(prefix):])
			break
		}
	}
	w.a.Log(level, msg)
	return len(p), nil
}

// logLimiter remembers when each message was last written. Raft's messages
// are constant strings, so the map stays small; it is bounded anyway.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]*limitState
}

type limitState struct {
	at         time.Time
	suppressed int
}

const maxLimitedMessages = 512

// allow reports whether key may be written now, and how many writes of it
// were suppressed since the last one.
func (l *logLimiter) allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.last[key]
	if !ok {
		if len(l.last) >= maxLimitedMessages {
			clear(l.last)
		}
		l.last[key] = &limitState{at: now}
		return true, 0
	}
	if now.Sub(st.at) < logEvery {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.at, st.suppressed = now, 0
	return true, n
}
