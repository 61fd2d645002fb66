//go:build !linux

package main

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// childAttr has no parent-death signal outside Linux: the bench stops its
// nodes itself on every way out it controls (end, error, SIGINT, SIGTERM).
func childAttr() *syscall.SysProcAttr { return nil }

// signalChild sends sig to the child (a kill where only that is supported).
func signalChild(p *os.Process, sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return p.Kill()
	}
	return p.Signal(sig)
}

// pacer sleeps with time.Sleep outside Linux: the runtime may wake it up to
// a millisecond late, which shows as the generator's lateness.
type pacer struct{}

func newPacer() *pacer               { return &pacer{} }
func (*pacer) sleep(d time.Duration) { time.Sleep(d) }
func (*pacer) close()                {}

var errNoCPU = errors.New("CPU time not measured on this system")

func selfCPU() (time.Duration, error)        { return 0, errNoCPU }
func procCPU(pid int) (time.Duration, error) { return 0, errNoCPU }
