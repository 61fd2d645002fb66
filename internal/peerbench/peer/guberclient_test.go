package peer

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	guber "github.com/gubernator-io/gubernator/v2"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeV1 answers GetRateLimits: keys starting "over" are over the limit,
// "broken" gets an error in its answer; every request's checks are
// remembered. While hold is not nil, calls wait on it.
type fakeV1 struct {
	guber.UnimplementedV1Server
	mu      sync.Mutex
	batches [][]*guber.RateLimitReq
	hold    chan struct{}
}

func (f *fakeV1) GetRateLimits(ctx context.Context, r *guber.GetRateLimitsReq) (*guber.GetRateLimitsResp, error) {
	f.mu.Lock()
	f.batches = append(f.batches, r.Requests)
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp := &guber.GetRateLimitsResp{}
	for _, q := range r.Requests {
		a := &guber.RateLimitResp{Status: guber.Status_UNDER_LIMIT, Limit: q.Limit, Remaining: q.Limit - q.Hits}
		switch {
		case strings.HasPrefix(q.UniqueKey, "over"):
			a.Status, a.Remaining = guber.Status_OVER_LIMIT, 0
		case strings.HasPrefix(q.UniqueKey, "broken"):
			a = &guber.RateLimitResp{Error: "broken key"}
		}
		resp.Responses = append(resp.Responses, a)
	}
	return resp, nil
}

func serveFake(t *testing.T, f *fakeV1) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	guber.RegisterV1Server(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String()
}

func rules(t *testing.T) *limits.Table {
	t.Helper()
	tab, err := limits.NewTable(limits.Rule{Pattern: "k:*", Rate: limits.MustParseRate("1000/s")},
		limits.Rule{Pattern: "over*", Rate: limits.MustParseRate("5/s")}, limits.Rule{Pattern: "broken*", Rate: limits.MustParseRate("5/s")})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestGuberLimiterAnswers(t *testing.T) {
	f := &fakeV1{}
	l, err := DialGuber(serveFake(t, f), GuberClientConfig{Rules: rules(t), InFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	d, err := l.AllowN(ctx, "k:1", 3)
	if err != nil || !d.Allowed || d.Remaining != 997 || d.Limit != limits.MustParseRate("1000/s") {
		t.Errorf("AllowN(k:1, 3) = %+v, %v; want allowed, 997 remaining, limit 1000/s", d, err)
	}
	if d, err := l.Allow(ctx, "over1"); err != nil || d.Allowed {
		t.Errorf("Allow(over1) = %+v, %v; want denied", d, err)
	}
	if _, err := l.Allow(ctx, "broken1"); !errors.Is(err, quotamesh.ErrUnavailable) {
		t.Errorf("Allow(broken1) = %v, want ErrUnavailable", err)
	}
	if _, err := l.Allow(ctx, "nomatch"); !errors.Is(err, ErrNoRule) {
		t.Errorf("Allow(nomatch) = %v, want ErrNoRule", err)
	}
	if _, err := l.AllowN(ctx, "k:1", 0); !errors.Is(err, quotamesh.ErrInvalidN) {
		t.Errorf("AllowN(k:1, 0) = %v, want ErrInvalidN", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.batches[0][0]
	if q.Name != "peerbench" || q.UniqueKey != "k:1" || q.Hits != 3 || q.Limit != 1000 || q.Duration != 1000 ||
		q.Behavior != guber.Behavior_GLOBAL || q.Algorithm != guber.Algorithm_TOKEN_BUCKET {
		t.Errorf("first check sent = %v, want peerbench/k:1, 3 hits of 1000 per 1000 ms, GLOBAL, token bucket", q)
	}
}

func TestGuberLimiterBatchesWhatQueuesWhileInFlight(t *testing.T) {
	f := &fakeV1{hold: make(chan struct{})}
	l, err := DialGuber(serveFake(t, f), GuberClientConfig{Rules: rules(t), InFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make(chan error, 11)
	call := func(key string) {
		wg.Go(func() {
			d, err := l.Allow(ctx, key)
			if err == nil && !d.Allowed {
				err = errors.New(key + " denied")
			}
			results <- err
		})
	}
	call("k:first")
	// The first call is in flight (the fake holds it): wait until the
	// server has it, then queue ten more behind it.
	for {
		f.mu.Lock()
		n := len(f.batches)
		f.mu.Unlock()
		if n == 1 {
			break
		}
	}
	for i := range 10 {
		call("k:" + string(rune('a'+i)))
	}
	for len(l.queue) < 10 {
	}
	close(f.hold)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Error(err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.batches) != 2 || len(f.batches[0]) != 1 || len(f.batches[1]) != 10 {
		var sizes []int
		for _, b := range f.batches {
			sizes = append(sizes, len(b))
		}
		t.Fatalf("batches of %v checks, want [1 10]", sizes)
	}
}

func TestGuberLimiterClose(t *testing.T) {
	f := &fakeV1{hold: make(chan struct{})}
	defer close(f.hold)
	l, err := DialGuber(serveFake(t, f), GuberClientConfig{Rules: rules(t), InFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := l.Allow(context.Background(), "k:1"); errc <- err }()
	for len(l.queue) > 0 || func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.batches) == 0 }() {
	}
	// The sender waits for the held call: Close stops waiting callers
	// first, then waits for the sender, whose call times out.
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	if err := <-errc; !errors.Is(err, quotamesh.ErrClosed) {
		t.Errorf("call waiting at Close = %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := l.Allow(context.Background(), "k:1"); !errors.Is(err, quotamesh.ErrClosed) {
		t.Errorf("Allow after Close = %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestDialGuberRefusesBadConfig(t *testing.T) {
	for _, cfg := range []GuberClientConfig{{}, {Rules: rules(t), MaxBatch: GuberMaxBatch + 1}, {Rules: rules(t), InFlight: -1}} {
		if l, err := DialGuber("127.0.0.1:1", cfg); err == nil {
			l.Close()
			t.Errorf("DialGuber(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestRunDaemonRefusesBadFlags(t *testing.T) {
	for _, st := range []struct {
		args []string
		want string
	}{
		{nil, "--grpc and --http"},
		{[]string{"--grpc", "127.0.0.1:1", "--http", "127.0.0.1:2"}, "--peers"},
		{[]string{"--grpc", "127.0.0.1:1", "--http", "127.0.0.1:2", "--peers", "127.0.0.1:3"}, "does not hold"},
		{[]string{"--grpc", "127.0.0.1:1", "--http", "127.0.0.1:2", "--peers", "127.0.0.1:1", "--sync-wait", "-1s"}, "--sync-wait"},
		{[]string{"--nope"}, "nope"},
	} {
		var logs bytes.Buffer
		err := RunDaemon(context.Background(), st.args, &logs)
		if err == nil || !strings.Contains(err.Error()+logs.String(), st.want) {
			t.Errorf("RunDaemon(%q) = %v (log %q), want an error naming %s", st.args, err, logs.String(), st.want)
		}
	}
}
