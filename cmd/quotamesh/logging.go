package main

import (
	"io"
	"os"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/serveconfig"
)

// logTimeFormat stamps every event to the millisecond, in UTC offset form.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// The binary's process-wide zerolog settings, set once before any goroutine
// runs (package initialisation): timestamps to the millisecond, durations
// as strings with their unit ("5.024656ms", "8m48.869088s") rather than
// bare numbers. Embedders of package node choose their own.
func init() {
	zerolog.TimeFieldFormat = logTimeFormat
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
}

// newLogger writes to w in format: console only when asked, or with auto
// when w is a terminal; JSON otherwise, so that log files and collectors
// never get escape codes.
func newLogger(w io.Writer, format string) zerolog.Logger {
	if format == serveconfig.LogConsole || format == serveconfig.LogAuto && isTerminal(w) {
		// Colours (escape codes) only on a terminal, even when console is
		// asked for explicitly.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).With().Timestamp().Logger()
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
