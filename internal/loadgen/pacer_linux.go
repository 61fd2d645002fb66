package loadgen

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// pacer sleeps precisely: on its own OS thread, in nanosleep, with the
// thread's timer slack at 1 ns. Here that wakes 30 µs late at the median
// and 60 µs at P99, where a Go timer fires about 1.1 ms late (the runtime
// polls timers with millisecond timeouts). Only the goroutine that made it
// may use it, and it must close it: close unlocks the thread, so the
// thread lives on (a thread that started a child process with a
// parent-death signal must not exit).
type pacer struct{}

// defaultSlack (0) restores the thread's default slack.
const defaultSlack = 0

func newPacer() *pacer {
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) // best effort: a coarser sleep only shows as lateness
	return &pacer{}
}

func (*pacer) sleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

func (*pacer) close() {
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, defaultSlack, 0, 0, 0)
	runtime.UnlockOSThread()
}
