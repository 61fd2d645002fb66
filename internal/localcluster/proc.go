package localcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// killWait bounds how long Kill waits for a process to exit after SIGKILL.
const killWait = 10 * time.Second

// ProcSpec is how to run one child process.
type ProcSpec struct {
	// Name names the process in errors (n1, tcp1).
	Name string
	// Addr is the address it serves, for errors.
	Addr string
	// Argv is the command line; Argv[0] is the program.
	Argv []string
	// LogPath receives the process's stdout and stderr.
	LogPath string
	// Command makes the command that runs argv (nil: exec.Command). A
	// backend uses it to run the process in a namespace or a container.
	Command func(argv []string) *exec.Cmd
	// Signal replaces signalling the process group (nil: signal it), for a
	// process that stands for another: the docker CLI for its container.
	Signal func(sig syscall.Signal) error
	// KillWithParent asks the kernel to kill the process if this one dies
	// without stopping it (Linux only; see procAttr).
	KillWithParent bool
	// OnExit, if set, is called by the process's waiter when it exits,
	// before Exited is closed; expected is true when Kill, Stop or a
	// SIGKILL or SIGTERM sent through Signal ended it.
	OnExit func(err error, expected bool)
}

// Proc is one child process of a Group. Its methods are safe for
// concurrent use.
type Proc struct {
	spec ProcSpec
	wg   *sync.WaitGroup // the group's waiters

	mu     sync.Mutex // serializes starts
	starts int
	cur    atomic.Pointer[procRun] // nil before the first start
}

// procRun is one run of a process: what start made and its waiter fills.
type procRun struct {
	cmd      *exec.Cmd
	exited   chan struct{} // closed when Wait returned
	waitErr  error         // Wait's result, read once exited is closed
	expected atomic.Bool   // the exit is Kill's or Stop's doing
}

// Name is the spec's name.
func (p *Proc) Name() string { return p.spec.Name }

// LogPath is where the process's output goes.
func (p *Proc) LogPath() string { return p.spec.LogPath }

// start runs the process, with its output going to its log file and a
// goroutine of the group that waits for it.
func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if p.starts > 0 {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	logf, err := os.OpenFile(p.spec.LogPath, flags, 0o644)
	if err != nil {
		return fmt.Errorf("log file for %s: %w", p.spec.Name, err)
	}
	r := &procRun{exited: make(chan struct{})}
	if p.spec.Command != nil {
		r.cmd = p.spec.Command(p.spec.Argv)
	} else {
		r.cmd = exec.Command(p.spec.Argv[0], p.spec.Argv[1:]...)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = procAttr(p.spec.KillWithParent)
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s (%s): %w", p.spec.Name, p.spec.Argv[0], err)
	}
	p.cur.Store(r)
	p.starts++
	p.wg.Go(func() {
		r.waitErr = r.cmd.Wait()
		logf.Close()
		if p.spec.OnExit != nil {
			p.spec.OnExit(r.waitErr, r.expected.Load())
		}
		close(r.exited)
	})
	return nil
}

// Restart starts the process again on the same command line; it must have
// exited.
func (p *Proc) Restart() error {
	if p.Running() {
		return fmt.Errorf("%s: still running", p.spec.Name)
	}
	return p.start()
}

// state is the current run (nil before the first start) and whether it
// has exited.
func (p *Proc) state() (*procRun, bool) {
	r := p.cur.Load()
	if r == nil {
		return nil, false
	}
	select {
	case <-r.exited:
		return r, true
	default:
		return r, false
	}
}

// Running reports whether the process was started and has not exited (a
// paused process runs).
func (p *Proc) Running() bool {
	r, exited := p.state()
	return r != nil && !exited
}

// Exited is closed when the current run of the process has exited; nil
// before the first start.
func (p *Proc) Exited() <-chan struct{} {
	if r := p.cur.Load(); r != nil {
		return r.exited
	}
	return nil
}

// Pid is the process ID of the current run (0 before the first start).
func (p *Proc) Pid() int {
	if r := p.cur.Load(); r != nil {
		return r.cmd.Process.Pid
	}
	return 0
}

// Signal sends sig to the running process (to its process group on
// Linux, or through ProcSpec.Signal). SIGKILL and SIGTERM mark its exit as
// expected.
func (p *Proc) Signal(sig syscall.Signal) error {
	r, exited := p.state()
	if r == nil || exited {
		return fmt.Errorf("%s: signal %v: %w", p.spec.Name, sig, ErrNotRunning)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		r.expected.Store(true)
	}
	if p.spec.Signal != nil {
		if err := p.spec.Signal(sig); err != nil {
			return fmt.Errorf("%s: %w", p.spec.Name, err)
		}
		return nil
	}
	if err := signalGroup(r.cmd.Process, sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", p.spec.Name, sig, err)
	}
	return nil
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (p *Proc) Pause() error { return p.Signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.Exited():
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s: still running %v after SIGKILL", p.spec.Name, killWait)
	}
}

// Died returns an error naming the process, how it exited and the tail of
// its log if it has exited (ErrExited), or nil if it runs or never started.
func (p *Proc) Died() error {
	r, exited := p.state()
	if !exited {
		return nil
	}
	how := "exit status 0"
	if r.waitErr != nil {
		how = r.waitErr.Error()
	}
	return fmt.Errorf("%w: %s (%s, %s); last lines of %s:\n%s", ErrExited, p.spec.Name, p.spec.Addr, how, p.spec.LogPath, Tail(p.spec.LogPath, 15))
}

// Tail returns the last n lines of the file at path, indented, or why it
// cannot be read.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + string(bytes.Join(lines, []byte("\n  ")))
}

// Group is a set of child processes with one working directory, stopped
// and removed together.
type Group struct {
	// Dir holds the processes' files; Stop and Kill remove it unless the
	// group keeps it.
	Dir string
	// Procs are the processes started, in order.
	Procs []*Proc

	keep bool
	wg   sync.WaitGroup // one waiter per run of a process
}

// NewGroup makes a group working in dir, or, if dir is empty, in a new
// temporary directory named tempPrefix*. keep leaves the directory in place
// when the group stops.
func NewGroup(dir, tempPrefix string, keep bool) (*Group, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return nil, fmt.Errorf("temporary directory: %w", err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("directory: %w", err)
	}
	return &Group{Dir: dir, keep: keep}, nil
}

// Start starts a process and adds it to the group.
func (g *Group) Start(spec ProcSpec) (*Proc, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("%w: %s: empty command line", ErrInvalidConfig, spec.Name)
	}
	p := &Proc{spec: spec, wg: &g.wg}
	if err := p.start(); err != nil {
		return nil, err
	}
	g.Procs = append(g.Procs, p)
	return p, nil
}

// Died returns the first death among the group's processes (see
// Proc.Died), or nil; also nil for a nil group.
func (g *Group) Died() error {
	if g == nil {
		return nil
	}
	for _, p := range g.Procs {
		if err := p.Died(); err != nil {
			return err
		}
	}
	return nil
}

// Pids are the process IDs of the group's processes, in order.
func (g *Group) Pids() []int {
	var pids []int
	for _, p := range g.Procs {
		pids = append(pids, p.Pid())
	}
	return pids
}

// Stop shuts every process down gracefully: SIGCONT (for a paused one) and
// SIGTERM, then SIGKILL to all that still run after timeout. It waits for
// every process and removes the directory. It is safe on a partly started
// group; what went wrong is returned, after everything was done.
func (g *Group) Stop(timeout time.Duration) error {
	var errs []error
	for _, p := range g.Procs {
		if p.Running() {
			_ = p.Resume()
			_ = p.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, p := range g.Procs {
		select {
		case <-p.Exited():
		case <-deadline.C:
			errs = append(errs, fmt.Errorf("node %s did not stop within %v; killing it", p.spec.Name, timeout))
			for _, k := range g.Procs {
				_ = k.Signal(syscall.SIGKILL)
			}
			<-p.Exited()
		}
	}
	return errors.Join(append(errs, g.finish())...)
}

// Kill kills every running process with SIGKILL (after SIGCONT, for a
// paused one), waits for them all and removes the directory.
func (g *Group) Kill() error {
	var errs []error
	for _, p := range g.Procs {
		if p.Running() {
			_ = p.Resume()
			errs = append(errs, p.Kill())
		}
	}
	return errors.Join(append(errs, g.finish())...)
}

// finish waits for every waiter and removes the directory unless kept.
func (g *Group) finish() error {
	g.wg.Wait()
	if g.keep {
		return nil
	}
	if err := os.RemoveAll(g.Dir); err != nil {
		return fmt.Errorf("remove %s: %w", g.Dir, err)
	}
	return nil
}
