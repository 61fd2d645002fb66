package consensus

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/consensus/consensustest"
)

// killChildEnv, when set, makes TestKill9DuringWrites run as the child: a
// one-node Store in that directory that writes rules until it is killed.
const killChildEnv = "QM_KILL9_CHILD_DIR"

// TestKill9DuringWrites kills, with SIGKILL, a process that streams changes
// into a one-node Store, then reopens its DataDir in this process: every
// change the child acknowledged must be in the table, and the Store must open
// (a torn append is at most the unacknowledged one). Three rounds on the same
// directory, so recovery also starts from a recovered log.
func TestKill9DuringWrites(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	acked := make(map[string]string)
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9DuringWrites$", "-test.v=false")
		cmd.Env = append(os.Environ(), killChildEnv+"="+dir, fmt.Sprintf("QM_KILL9_ROUND=%d", round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill after a number of acknowledged changes that varies by round,
		// so the kill lands at different points of the log.
		target := 20 + 7*round
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		n := 0
		deadline := time.After(90 * time.Second)
	read:
		for n < target {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				if p, r, ok := strings.Cut(strings.TrimPrefix(l, "ACK "), " "); ok && strings.HasPrefix(l, "ACK ") {
					acked[p] = r
					n++
				}
			case <-deadline:
				break read
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		for range lines { // drain, so the reader goroutine ends
		}
		_ = cmd.Wait()
		if n < target {
			t.Fatalf("round %d: the child acknowledged %d changes before it ended or timed out; want %d", round, n, target)
		}

		// Reopen in this process.
		c := newCluster(t, 0, func(c *Config) { c.MaxVoters = 1 })
		node := c.node("n1")
		node.dir = dir
		c.start(node, nil)
		c.leader()
		ctx := ctxT(t, 20*time.Second)
		rules, err := node.store.List(ctx)
		if err != nil {
			t.Fatalf("round %d: List after the kill: %v", round, err)
		}
		have := make(map[string]string, len(rules))
		for _, r := range rules {
			have[r.Pattern] = r.Rate.String()
		}
		for p, r := range acked {
			if have[p] != r {
				t.Errorf("round %d: acknowledged %s %s before the kill; the table has %q", round, p, r, have[p])
			}
		}
		t.Logf("round %d: killed after %d acknowledged changes; %d acknowledged in all, %d rules on disk", round, n, len(acked), len(rules))
		c.closeAll()
	}
}

// killChild runs a one-node Store in dir and writes rules, printing each one
// it has acknowledged, until it is killed (or a minute passes).
func killChild(dir string) {
	net := consensustest.NewNetwork()
	layer, err := net.Listen("n1:7000")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg := Config{
		NodeID: "n1", Address: "n1:7000", DataDir: dir, MaxVoters: 1,
		Bootstrap: []Server{{ID: "n1", Address: "n1:7000"}},
		Layer:     layer, Forwarder: net.Forwarder("n1:7000"),
		Logger: zerolog.Nop(),
		// Snapshots now and then, so kills also land around them.
		SnapshotThreshold: 16, SnapshotInterval: 50 * time.Millisecond,
	}
	fastTimings(&cfg)
	s, err := Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	round := os.Getenv("QM_KILL9_ROUND")
	for i := 0; ctx.Err() == nil && i < 1000; i++ {
		r := rule(fmt.Sprintf("r%s-%d", round, i), fmt.Sprintf("%d/s", i+1))
		if _, err := s.Set(ctx, r); err != nil {
			continue
		}
		fmt.Printf("ACK %s %s\n", r.Pattern, r.Rate)
	}
	os.Exit(0)
}
