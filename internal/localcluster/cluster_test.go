package localcluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/internal/certs"
)

// childEnv makes this test binary a stand-in for `quotamesh serve` (see
// fakeServe), so that the launcher is tested without building quotamesh.
const childEnv = "QM_LOCALCLUSTER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(fakeServe(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// fakeServe answers /readyz on --admin-listen until SIGTERM (exit 0), or
// exits with status 3 after --exit-after. It prints its arguments first,
// so that a test can read them from the log.
func fakeServe(args []string) int {
	fmt.Println(strings.Join(args, " "))
	if len(args) == 0 || args[0] != "serve" {
		return 2
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	admin := fs.String("admin-listen", "", "")
	exitAfter := fs.Duration("exit-after", 0, "")
	for _, f := range []string{"id", "cluster-id", "listen", "advertise", "data-dir", "certs", "bootstrap", "log-format"} {
		fs.String(f, "", "")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *admin, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ready")
	})}
	go srv.ListenAndServe()
	if *exitAfter > 0 {
		select {
		case <-time.After(*exitAfter):
			fmt.Println("exiting on my own")
			return 3
		case <-ctx.Done():
		}
	}
	<-ctx.Done()
	srv.Close()
	return 0
}

// exits records OnExit calls.
type exits struct {
	mu  sync.Mutex
	log []string
}

func (e *exits) add(n *Node, _ error, expected bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf("%s expected=%v", n.ID, expected))
}

func (e *exits) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.log...)
}

func startFake(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	t.Setenv(childEnv, "1")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Binary = exe
	if cfg.IPs == nil {
		cfg.IPs = Loopback(1, 2)
	}
	c, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A cluster starts, is ready, writes the certificates and the command
// lines the nodes need, pauses, kills and restarts a node, and stops,
// removing its directory.
func TestClusterLifecycle(t *testing.T) {
	var ex exits
	c := startFake(t, Config{TempPrefix: "lc-test-", ClusterID: "t", Flags: []string{"--log-format", "console"},
		NodeFlags: map[int][]string{1: {"--certs", "elsewhere"}}, OnExit: ex.add})
	if err := c.WaitReady(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	set, err := certs.LoadDir(c.CertDir)
	if err != nil {
		t.Fatalf("certificates: %v", err)
	}
	if _, ok := set.Clients[AdminClient]; !ok || len(set.Nodes) != 2 {
		t.Errorf("certificates: %d nodes, clients %v; want 2 nodes and %q", len(set.Nodes), set.Clients, AdminClient)
	}
	if got := c.Addrs(); len(got) != 2 || !strings.HasPrefix(got[0], "127.0.0.1:") || !strings.HasPrefix(got[1], "127.0.0.2:") {
		t.Errorf("Addrs() = %v, want a port on 127.0.0.1 and on 127.0.0.2", got)
	}
	n1, n2 := c.Nodes[0], c.Nodes[1]
	argv, _ := os.ReadFile(n1.LogPath())
	for _, want := range []string{"serve --id n1 --cluster-id t --listen " + n1.Addr + " --advertise " + n1.Addr,
		"--admin-listen " + n1.Admin, "--data-dir " + n1.DataDir, "--bootstrap n1=" + n1.Addr + ",n2=" + n2.Addr,
		"--log-format json --log-format console\n"} {
		if !strings.Contains(string(argv), want) {
			t.Errorf("n1's command line %q: no %q", argv, want)
		}
	}
	if argv, _ := os.ReadFile(n2.LogPath()); !strings.Contains(string(argv), "--log-format console --certs elsewhere\n") {
		t.Errorf("n2's command line %q: want its own flags last", argv)
	}

	if err := n2.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := n2.Resume(); err != nil {
		t.Fatal(err)
	}
	pid := n2.Pid()
	if err := n2.Kill(); err != nil {
		t.Fatal(err)
	}
	if n2.Running() || n2.Died() == nil || !errors.Is(n2.Died(), ErrExited) {
		t.Errorf("after Kill: running %v, Died %v; want stopped and ErrExited", n2.Running(), n2.Died())
	}
	if err := n2.Signal(syscall.SIGTERM); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Signal to a killed node = %v, want ErrNotRunning", err)
	}
	if err := c.WaitRunningReady(waitCtx(t)); err != nil {
		t.Errorf("WaitRunningReady with n2 down: %v", err)
	}
	if err := n1.Restart(); err == nil {
		t.Error("Restart of a running node: no error")
	}
	if err := n2.Restart(); err != nil {
		t.Fatal(err)
	}
	if n2.Pid() == pid || !n2.Running() {
		t.Errorf("after Restart: pid %d (was %d), running %v", n2.Pid(), pid, n2.Running())
	}
	if err := c.WaitReady(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	if log, _ := os.ReadFile(n2.LogPath()); strings.Count(string(log), "serve --id n2") != 2 {
		t.Errorf("n2's log after a restart:\n%s\nwant both runs (appended)", log)
	}

	if err := c.Stop(10 * time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("stat %s after Stop: %v, want it removed", c.Dir, err)
	}
	got := ex.get()
	slices.Sort(got[1:]) // n1 and n2 stop in any order
	if want := []string{"n2 expected=true", "n1 expected=true", "n2 expected=true"}; !slices.Equal(got, want) {
		t.Errorf("exits %v, want %v", got, want)
	}
}

// A node that exits on its own is an unexpected exit: Died names it with
// its log, WaitReady fails with it, and Kill, in a directory the cluster
// keeps, leaves the directory in place.
func TestClusterNodeDies(t *testing.T) {
	var ex exits
	dir := filepath.Join(t.TempDir(), "kept")
	logs := filepath.Join(t.TempDir(), "logs")
	c := startFake(t, Config{Dir: dir, Keep: true, LogDir: logs, Port: 0,
		NodeFlags: map[int][]string{0: {"--exit-after", "200ms"}}, OnExit: ex.add})
	_ = c.WaitReady(waitCtx(t)) // ready or not: n1 exits soon
	<-c.Nodes[0].Exited()
	if err := c.WaitReady(waitCtx(t)); !errors.Is(err, ErrExited) {
		t.Errorf("WaitReady with n1 gone = %v, want ErrExited", err)
	}
	d := c.Died()
	for _, want := range []string{"node process exited early: n1", "exit status 3", filepath.Join(logs, "n1.log"), "exiting on my own"} {
		if d == nil || !strings.Contains(d.Error(), want) {
			t.Errorf("Died() = %v, want %q in it", d, want)
		}
	}
	if err := c.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "certs", "ca.crt")); err != nil {
		t.Errorf("kept directory: %v", err)
	}
	if got := ex.get(); len(got) != 2 || got[0] != "n1 expected=false" || got[1] != "n2 expected=true" {
		t.Errorf("exits %v, want n1 unexpected, then n2 expected", got)
	}
}

func TestStartErrors(t *testing.T) {
	for i, cfg := range []Config{
		{IPs: Loopback(1, 1)},
		{Binary: "quotamesh"},
	} {
		if _, err := Start(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("step %d: Start(%+v) = %v, want ErrInvalidConfig", i, cfg, err)
		}
	}
	// A program that cannot start: the error names it, nothing is left.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if _, err := Start(Config{Binary: filepath.Join(tmp, "no-such-program"), IPs: Loopback(1, 1)}); err == nil || !strings.Contains(err.Error(), "start n1") {
		t.Errorf("Start of a missing program = %v, want an error naming n1", err)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestLoopback(t *testing.T) {
	if got := strings.Join(Loopback(10, 3), ","); got != "127.0.0.10,127.0.0.11,127.0.0.12" {
		t.Errorf("Loopback(10, 3) = %s", got)
	}
}
