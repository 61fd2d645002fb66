//go:build !linux

package main

import (
	"os"
	"syscall"
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
