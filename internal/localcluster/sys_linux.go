package localcluster

import (
	"os"
	"syscall"
)

// procAttr puts a child in its own process group (a Ctrl-C at the terminal
// reaches only this process, which then stops its children in order) and,
// with killWithParent, asks the kernel to kill it if this process dies
// without stopping it. Pdeathsig fires when the thread that started the
// child exits; Go keeps its threads for the life of the process unless a
// goroutine exits while locked to one, which the callers never do (the
// load generator's pacer unlocks its thread).
func procAttr(killWithParent bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if killWithParent {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}

// signalGroup sends sig to the child's whole process group.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}
