package localcluster

import "errors"

// ErrExited reports a process that exited while it was needed. Its text is
// what `quotamesh bench` has always printed for a dead node, so it carries
// no package prefix. Test with errors.Is.
var ErrExited = errors.New("node process exited early")

// ErrNotRunning reports a signal, kill or readiness probe for a process
// that is not running (never started, or exited).
var ErrNotRunning = errors.New("quotamesh/localcluster: process not running")

// ErrInvalidConfig reports a Config that cannot start a cluster; the error
// names the field and its value.
var ErrInvalidConfig = errors.New("quotamesh/localcluster: invalid config")
