//go:build !linux

package localcluster

import (
	"os"
	"syscall"
)

// procAttr sets nothing outside Linux: no process group, no parent-death
// signal. The callers stop their children themselves on every way out they
// control (end, error, SIGINT, SIGTERM).
func procAttr(bool) *syscall.SysProcAttr { return nil }

// signalGroup sends sig to the child itself (a kill where only that is
// supported).
func signalGroup(p *os.Process, sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		return p.Kill()
	}
	return p.Signal(sig)
}
