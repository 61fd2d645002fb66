package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
)

// outside is a cluster of real `quotamesh serve` processes (this test
// binary, run as the quotamesh binary: see benchChildEnv), reached only as
// a user reaches it: the CLI in child processes, the public SDK, raw QUIC,
// HTTP on the admin listeners, the log files.
type outside struct {
	t   *testing.T
	exe string
	lc  *localcluster.Cluster
	dir string
}

// cli runs `quotamesh args...` in a child process and returns its exit
// code, stdout, stderr and how long it took.
func (o *outside) cli(args ...string) (int, string, string, time.Duration) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.exe, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		o.t.Fatalf("quotamesh %v: %v", args, err)
	}
	return code, out.String(), errb.String(), took
}

// admin runs a CLI command against n1 with the cluster's certificates.
func (o *outside) admin(args ...string) (int, string, string, time.Duration) {
	o.t.Helper()
	return o.cli(append(args, "--addr", o.lc.Nodes[0].Addr, "--certs", o.lc.CertDir, "--timeout", "10s")...)
}

// metric sums the samples of name on a node's /metrics whose label text
// holds every one of labels.
func (o *outside) metric(n *localcluster.Node, name string, labels ...string) float64 {
	o.t.Helper()
	resp, err := http.Get("http://" + n.Admin + "/metrics")
	if err != nil {
		o.t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			o.t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// sdk dials the cluster with the CA of caDir and the client certificate
// name from certDir ("" for none).
func (o *outside) sdk(ctx context.Context, caDir, certDir, name string, addrs []string, more ...client.Option) (*client.Client, error) {
	o.t.Helper()
	set, err := certs.LoadDir(caDir)
	if err != nil {
		o.t.Fatal(err)
	}
	opts := []client.Option{client.WithCA(set.CA.Pool()), client.WithDialTimeout(5 * time.Second)}
	if name != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "clients", name+".crt"), filepath.Join(certDir, "clients", name+".key"))
		if err != nil {
			o.t.Fatal(err)
		}
		opts = append(opts, client.WithCertificate(cert))
	}
	return client.Dial(ctx, addrs, append(opts, more...)...)
}

// TestOutsideIn attacks a cluster of real processes the ways issue 13 lists
// and checks each is refused: no certificate, a CA-only certs directory, a
// decide-only certificate asking for admin, another cluster's certificate
// (refused within a second, without a storm of handshakes), a second node
// on a data directory in use, one rule flooding keys; then it kills a node
// under load and restarts it (no decision for a limited key made as
// unlimited), and reads the log files.
func TestOutsideIn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	benchChild(t) // children of this binary run the command line
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lc, err := localcluster.Start(localcluster.Config{
		Binary: exe, IPs: localcluster.Loopback(21, 3), Dir: filepath.Join(dir, "cluster"), ClusterID: "outside",
		LogDir: filepath.Join(dir, "logs"), Keep: true,
		// --max-keys for the flood; --log-format auto (after the launcher's
		// json) must write JSON to the log files, which are not terminals.
		Flags:          []string{"--max-keys", "50", "--log-format", "auto"},
		KillWithParent: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lc.Kill() }()
	o := &outside{t: t, exe: exe, lc: lc, dir: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := lc.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	n1 := lc.Nodes[0]

	// The operator's admin certificate works; a decide-only one for the
	// services comes from the public CLI.
	if code, _, stderr, _ := o.admin("limit", "set", "orders.create", "100/s"); code != 0 {
		t.Fatalf("admin limit set: exit %d: %s", code, stderr)
	}
	if code, _, stderr, _ := o.cli("certs", "issue", "--dir", lc.CertDir, "--client", "app", "--role", "decide", "--validity", "1h"); code != 0 {
		t.Fatalf("certs issue: exit %d: %s", code, stderr)
	}

	t.Run("no certificate", func(t *testing.T) {
		// Raw QUIC with the client ALPN and no certificate: the node
		// refuses at the first exchange, and the admin frame sent does
		// nothing.
		start := time.Now()
		cc, err := transport.DialClient(ctx, n1.Addr, transport.ClientConfig{CAs: lc.Certs.CA.Pool()})
		if err == nil {
			if s, err := cc.OpenStream(ctx); err == nil {
				frame, _ := wire.Append(nil, &wire.AdminRequest{ID: 1, Op: wire.AdminLimitSet, Rule: limits.Rule{Pattern: "evil", Rate: limits.MustParseRate("1/s")}})
				_, _ = s.Write(frame)
			}
			select {
			case <-cc.Done():
				err = cc.Err()
			case <-time.After(2 * time.Second):
			}
			_ = cc.Close()
		}
		if !errors.Is(err, transport.ErrCertificateRefused) || time.Since(start) > time.Second {
			t.Errorf("raw client without a certificate: %v after %v; want ErrCertificateRefused within 1 s", err, time.Since(start))
		}
		// The SDK says so within a second.
		start = time.Now()
		c, err := o.sdk(ctx, lc.CertDir, "", "", lc.Addrs())
		if err == nil {
			_ = c.Close()
		}
		if !errors.Is(err, client.ErrCertificate) || time.Since(start) > time.Second {
			t.Errorf("SDK without a certificate: %v after %v; want ErrCertificate within 1 s", err, time.Since(start))
		}
		if code, _, _, _ := o.admin("limit", "get", "evil"); code != 1 {
			t.Errorf("limit get evil: exit %d; want 1 (no such rule): the anonymous admin frame changed the table", code)
		}
	})

	t.Run("CA-only certs directory", func(t *testing.T) {
		caOnly := filepath.Join(dir, "ca-only")
		if err := os.MkdirAll(caOnly, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(lc.CertDir, certs.CACertFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(caOnly, certs.CACertFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr, took := o.cli("limit", "set", "evil", "1/s", "--addr", n1.Addr, "--certs", caOnly)
		if code != 2 || !strings.Contains(stderr, "no client certificate") || took > 5*time.Second {
			t.Errorf("limit set with a CA-only certs dir: exit %d after %v: %s; want 2, naming the missing client certificate", code, took, stderr)
		}
	})

	t.Run("decide-only certificate", func(t *testing.T) {
		for _, args := range [][]string{
			{"limit", "set", "evil", "1/s"},
			{"limit", "delete", "orders.create"},
			{"leave", "n3"},
			{"join", "n9", "127.0.0.1:7999"},
		} {
			code, _, stderr, _ := o.admin(append(args, "--client", "app")...)
			if code != 1 || !strings.Contains(stderr, "role decide") {
				t.Errorf("%v as app (decide): exit %d: %s; want 1, refused naming the role", args, code, stderr)
			}
		}
		if code, out, stderr, _ := o.admin("status", "--client", "app", "--json"); code != 0 || !strings.Contains(out, `"allow_anonymous":false`) {
			t.Errorf("status as app: exit %d: %s %s; want 0 and the client policy", code, stderr, out)
		}
		if code, out, _, _ := o.admin("limit", "list", "--client", "app"); code != 0 || !strings.Contains(out, "orders.create") || strings.Contains(out, "evil") {
			t.Errorf("limit list as app: exit %d: %s; want orders.create only", code, out)
		}
		c, err := o.sdk(ctx, lc.CertDir, lc.CertDir, "app", lc.Addrs())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if d, err := c.Allow(ctx, "orders.create"); err != nil || !d.Allowed {
			t.Errorf("app's decision: %+v, %v", d, err)
		}
		if _, err := c.SetLimit(ctx, limits.Rule{Pattern: "evil", Rate: limits.MustParseRate("1/s")}); !errors.Is(err, client.ErrForbidden) {
			t.Errorf("app's SetLimit through the SDK: %v, want ErrForbidden", err)
		}
	})

	t.Run("another cluster's certificate", func(t *testing.T) {
		other := filepath.Join(dir, "other")
		if code, _, stderr, _ := o.cli("certs", "init", "--dir", other); code != 0 {
			t.Fatalf("certs init: %s", stderr)
		}
		n3 := lc.Nodes[2]
		before := o.metric(n3, "quotamesh_transport_connection_attempts_total")
		deadline := time.Now().Add(10 * time.Second)
		// The CLI with the other cluster's directory, the SDK with its CA
		// and certificate, and the SDK with this CA and the other's
		// certificate: each fails at once, naming a certificate.
		code, _, stderr, took := o.cli("limit", "list", "--addr", n3.Addr, "--certs", other)
		bound := 2 * time.Second
		if raceEnabled {
			bound = 6 * time.Second // a race-instrumented CLI process starts slowly
		}
		if code != 1 || !strings.Contains(stderr, "certificate") || took > bound {
			t.Errorf("CLI with another cluster's certs: exit %d after %v: %s", code, took, stderr)
		}
		for _, s := range []struct{ ca, cert string }{{other, other}, {lc.CertDir, other}} {
			start := time.Now()
			c, err := o.sdk(ctx, s.ca, s.cert, "admin", []string{n3.Addr})
			if err == nil {
				_ = c.Close()
			}
			if !errors.Is(err, client.ErrCertificate) || time.Since(start) > time.Second {
				t.Errorf("SDK with CA of %s and certificate of %s: %v after %v; want ErrCertificate within 1 s", s.ca, s.cert, err, time.Since(start))
			}
		}
		time.Sleep(time.Until(deadline))
		n := o.metric(n3, "quotamesh_transport_connection_attempts_total") - before
		t.Logf("another cluster's certificate: %v connection attempts reached n3 in 10 s", n)
		if n >= 10 {
			t.Errorf("%v connection attempts reached n3 in 10 s; want fewer than 10", n)
		}
		if n := o.metric(n3, "quotamesh_transport_handshakes_refused_total", `reason="unknown_authority"`); n < 1 {
			t.Errorf("n3 counted %v handshakes refused for an unknown authority; want at least 1", n)
		}
	})

	t.Run("handshake storm is rate limited", func(t *testing.T) {
		// Clients that redial as fast as they can, from one address of
		// their own: the node refuses what is over 40 at once and 20/s for
		// that address, before any TLS work, and counts it.
		n2 := lc.Nodes[1]
		before := o.metric(n2, "quotamesh_transport_handshakes_refused_total", `reason="rate_limited"`)
		var mu sync.Mutex
		var refused, accepted int
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for end := start.Add(3 * time.Second); time.Now().Before(end); {
					// A socket per dial (quic-go reads a socket given to
					// Dial with a transport of its own).
					pc, err := net.ListenPacket("udp", "127.0.0.31:0")
					if err != nil {
						t.Errorf("no 127.0.0.31 on this machine: %v", err)
						return
					}
					cc, err := transport.DialClient(ctx, n2.Addr, transport.ClientConfig{CAs: lc.Certs.CA.Pool(), PacketConn: pc})
					mu.Lock()
					if errors.Is(err, transport.ErrConnectionRefused) {
						refused++
					} else if err == nil {
						accepted++
						_ = cc.Close()
					}
					mu.Unlock()
					_ = pc.Close()
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		after := o.metric(n2, "quotamesh_transport_handshakes_refused_total", `reason="rate_limited"`)
		t.Logf("storm from one address for %v: %d accepted, %d refused", elapsed, accepted, refused)
		limit := 40 + 20*elapsed.Seconds() + 5
		if float64(accepted+refused) <= limit {
			// The machine could not dial faster than the node allows:
			// nothing to refuse. The accepted count is still bounded.
			t.Logf("the storm reached only %d attempts (the allowance is %.0f): refusals not judged", accepted+refused, limit)
		} else if refused == 0 {
			t.Errorf("a storm of %d attempts from one address for %v: none refused", accepted+refused, elapsed)
		}
		if float64(accepted) > limit || after-before < float64(refused) {
			t.Errorf("a storm from one address for %v: %d handshakes accepted (at most %.0f allowed), %d refused, %v refusals counted by the node",
				elapsed, accepted, limit, refused, after-before)
		}
	})

	t.Run("second node on a data directory in use", func(t *testing.T) {
		listen, err := localcluster.FreePort("udp", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"serve", "--id", "n1", "--cluster-id", "outside", "--listen", listen, "--admin-listen", "",
			"--data-dir", n1.DataDir, "--certs", lc.CertDir, "--log-format", "json"}
		code, _, stderr, took := o.cli(args...)
		t.Logf("second serve on a locked data dir: exit %d after %v: %s", code, took, strings.TrimSpace(stderr))
		if code == 0 || !strings.Contains(stderr, "in use by pid") || took > 15*time.Second {
			t.Errorf("second serve on n1's data dir: exit %d after %v: %s; want non-zero within 15 s naming the holder", code, took, stderr)
		}
		// SIGTERM while it waits for the lock: it stops at once.
		cmd := exec.Command(o.exe, args...)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		start := time.Now()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("SIGTERM during start-up took %v", took)
			}
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("SIGTERM while waiting for the data directory did not stop serve: %s", errb.String())
		}
	})

	t.Run("one rule flooding keys", func(t *testing.T) {
		for _, r := range [][]string{{"user:*", "1000/s"}, {"team:*", "1000/s"}} {
			if code, _, stderr, _ := o.admin("limit", "set", r[0], r[1]); code != 0 {
				t.Fatalf("limit set %v: %s", r, stderr)
			}
		}
		time.Sleep(300 * time.Millisecond) // applied on every node
		// A generous request timeout: this is about budgets, not latency.
		c, err := o.sdk(ctx, lc.CertDir, lc.CertDir, "app", []string{n1.Addr}, client.WithNodeID("n1"), client.WithStrict(),
			client.WithRequestTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var tooMany int
		for i := range 200 {
			if _, err := c.Allow(ctx, fmt.Sprintf("user:%d", i)); errors.Is(err, quotamesh.ErrTooManyKeys) {
				tooMany++
			} else if err != nil {
				t.Fatalf("user:%d: %v", i, err)
			}
		}
		t.Logf("flood: %d of 200 user keys refused on a node with --max-keys 50", tooMany)
		if tooMany == 0 {
			t.Errorf("200 user keys on a node with --max-keys 50: none refused")
		}
		if d, err := c.Allow(ctx, "orders.create"); err != nil || !d.Allowed || d.Unlimited {
			t.Errorf("orders.create after the flood: %+v, %v; want a decision by its rule", d, err)
		}
		for i := range 5 {
			if d, err := c.Allow(ctx, fmt.Sprintf("team:%d", i)); err != nil || d.Unlimited {
				t.Errorf("team:%d after the flood: %+v, %v; want a decision by its rule", i, d, err)
			}
		}
		time.Sleep(1500 * time.Millisecond) // the metrics are refreshed every second
		if n := o.metric(n1, "quotamesh_rule_keys_rejected_total", `rule="user:*"`); n == 0 {
			t.Error("quotamesh_rule_keys_rejected_total{rule=\"user:*\"} did not count the flood")
		}
	})

	t.Run("restart under load", func(t *testing.T) {
		if code, _, stderr, _ := o.admin("limit", "set", "limited", "100000/s"); code != 0 {
			t.Fatalf("limit set: %s", stderr)
		}
		time.Sleep(300 * time.Millisecond)
		n2 := lc.Nodes[1]
		c, err := o.sdk(ctx, lc.CertDir, lc.CertDir, "app", []string{n2.Addr}, client.WithNodeID("n2"), client.WithStrict(),
			client.WithRequestTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var mu sync.Mutex
		var served, unlimited, afterRestart int
		restarted := make(chan struct{})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					d, err := c.Allow(ctx, "limited")
					if err != nil {
						time.Sleep(5 * time.Millisecond)
						continue
					}
					mu.Lock()
					served++
					if d.Unlimited {
						unlimited++
					}
					select {
					case <-restarted:
						afterRestart++
					default:
					}
					mu.Unlock()
				}
			})
		}
		time.Sleep(500 * time.Millisecond)
		if err := n2.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := n2.Restart(); err != nil {
			t.Fatal(err)
		}
		close(restarted)
		for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			enough := afterRestart >= 500
			mu.Unlock()
			if enough {
				break
			}
		}
		close(stop)
		wg.Wait()
		t.Logf("restart under load: %d decisions, %d after the restart, %d as unlimited", served, afterRestart, unlimited)
		if afterRestart < 500 {
			t.Errorf("the restarted node served %d decisions in 20 s", afterRestart)
		}
		if unlimited > 0 {
			t.Errorf("%d of %d decisions for a limited key were made as unlimited", unlimited, served)
		}
	})

	// Stop the nodes (SIGTERM: their shutdown logs a duration) and read
	// the log files.
	if err := lc.Stop(20 * time.Second); err != nil {
		t.Errorf("stop: %v", err)
	}
	ms := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$`)
	unit := regexp.MustCompile(`^-?[0-9.]+(ns|µs|ms|s|m|h)`)
	var durations, refusals int
	for _, n := range lc.Nodes {
		data, err := os.ReadFile(n.LogPath())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte(data, 0x1b) >= 0 {
			t.Errorf("%s holds escape codes", n.LogPath())
		}
		for i, line := range bytes.Split(data, []byte("\n")) {
			if len(line) == 0 || line[0] != '{' {
				continue // the one line serve prints on stdout
			}
			var ev map[string]any
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Errorf("%s:%d is not JSON: %s", n.LogPath(), i+1, line)
				continue
			}
			if ts, _ := ev["time"].(string); !ms.MatchString(ts) {
				t.Errorf("%s:%d: time %q has no milliseconds", n.LogPath(), i+1, ev["time"])
			}
			for _, k := range []string{"took", "up_for", "retry_in"} {
				if v, ok := ev[k]; ok {
					durations++
					if s, _ := v.(string); !unit.MatchString(s) {
						t.Errorf("%s:%d: %s %v has no unit", n.LogPath(), i+1, k, v)
					}
				}
			}
			if ev["message"] == "handshake refused" {
				refusals++
				if ev["level"] != "warn" {
					t.Errorf("%s:%d: a refused handshake logged at %v, want warn", n.LogPath(), i+1, ev["level"])
				}
			}
		}
	}
	if durations == 0 || refusals == 0 {
		t.Errorf("the logs hold %d durations and %d refused handshakes; want some of each to check", durations, refusals)
	}
}
