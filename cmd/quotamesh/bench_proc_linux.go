package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// childAttr puts a node process in its own process group (a Ctrl-C at the
// terminal reaches only the bench, which then stops its nodes in order) and
// asks the kernel to kill it if the bench dies without stopping it. Pdeathsig
// fires when the thread that started the child exits; Go keeps its threads
// for the life of the process unless a goroutine exits while locked to one,
// which the bench never does (the pacer unlocks its thread).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalChild sends sig to the child's whole process group.
func signalChild(p *os.Process, sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}

// pacer sleeps precisely: on its own OS thread, in nanosleep, with the
// thread's timer slack at 1 ns. Here that wakes 30 µs late at the median
// and 60 µs at P99, where a Go timer fires about 1.1 ms late (the runtime
// polls timers with millisecond timeouts). Only the goroutine that made it
// may use it, and it must close it.
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

// selfCPU is the CPU time this process used so far, user and system.
func selfCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// userHZ is the unit of /proc/<pid>/stat's times: fixed at 100 by Linux's
// ABI whatever the kernel's tick.
const userHZ = 100

// procCPU is the CPU time process pid used so far, user and system, from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// fields are counted after its closing one. utime and stime are
	// fields 14 and 15, so 12th and 13th after it.
	_, rest, ok := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %q: %w", pid, s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
