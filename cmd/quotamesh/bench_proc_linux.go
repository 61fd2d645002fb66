package main

import (
	"os"
	"syscall"
)

// childAttr puts a node process in its own process group (a Ctrl-C at the
// terminal reaches only the bench, which then stops its nodes in order) and
// asks the kernel to kill it if the bench dies without stopping it. Pdeathsig
// fires when the thread that started the child exits; Go keeps its threads
// for the life of the process unless a goroutine exits while locked to one,
// which the bench never does.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalChild sends sig to the child's whole process group.
func signalChild(p *os.Process, sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}
