package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/limits"
)

// GuberMaxBatch is the most rate limit checks one GetRateLimits may carry
// (Gubernator refuses more).
const GuberMaxBatch = 1000

// ErrNoRule reports a key that no rule of the client's table matches:
// Gubernator has no limits of its own, every check carries one.
var ErrNoRule = errors.New("peer: no rule matches the key")

// GuberClientConfig configures the clients of a Gubernator cluster.
type GuberClientConfig struct {
	// Rules give each key its limit (Count per Window, token bucket);
	// required.
	Rules *limits.Table
	// InFlight is the most GetRateLimits calls in flight per daemon
	// (default 8). Calls queued while they are in flight go out together
	// in the next one.
	InFlight int
	// MaxBatch is the most checks per GetRateLimits (default and at most
	// GuberMaxBatch); 1 sends every check alone.
	MaxBatch int
	// Timeout bounds one GetRateLimits (default 500 ms, the SDK's request
	// timeout).
	Timeout time.Duration
	// Name is every check's rate limit name (default "peerbench"); the
	// key is its unique key.
	Name string
}

func (c GuberClientConfig) withDefaults() GuberClientConfig {
	if c.InFlight == 0 {
		c.InFlight = 8
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = GuberMaxBatch
	}
	if c.Timeout == 0 {
		c.Timeout = 500 * time.Millisecond
	}
	if c.Name == "" {
		c.Name = "peerbench"
	}
	return c
}

// GuberLimiter is a quotamesh.Limiter over one Gubernator daemon's gRPC
// API (the generated V1 client on one connection): each AllowN is one
// check with GLOBAL behaviour, the token bucket algorithm and its rule's
// limit and duration. InFlight sender goroutines each take every check
// queued (up to MaxBatch) and send them as one GetRateLimits, so checks
// made while others are in flight share a request, as QuotaMesh's SDK
// shares a frame.
type GuberLimiter struct {
	cfg   GuberClientConfig
	conn  *grpc.ClientConn
	v1    guber.V1Client
	queue chan *guberCall
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type guberCall struct {
	key  string
	hits int64
	rate limits.Rate
	done chan struct{}
	d    quotamesh.Decision
	err  error
}

// DialGuber connects to the daemon at addr (gRPC host:port, plain text:
// the daemons run without TLS) and starts the senders.
func DialGuber(addr string, cfg GuberClientConfig) (*GuberLimiter, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.Rules == nil:
		return nil, errors.New("peer: gubernator client: no rules")
	case cfg.InFlight < 1 || cfg.MaxBatch < 1 || cfg.MaxBatch > GuberMaxBatch:
		return nil, fmt.Errorf("peer: gubernator client: in flight %d, batch %d: want at least 1 and a batch of at most %d",
			cfg.InFlight, cfg.MaxBatch, GuberMaxBatch)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("peer: gubernator client: dial %s: %w", addr, err)
	}
	l := &GuberLimiter{cfg: cfg, conn: conn, v1: guber.NewV1Client(conn),
		// Room for a full batch per sender: a caller beyond waits, and
		// the wait shows in its latency.
		queue: make(chan *guberCall, cfg.InFlight*cfg.MaxBatch), stop: make(chan struct{})}
	for range cfg.InFlight {
		l.wg.Go(l.send)
	}
	return l, nil
}

// Allow is AllowN(ctx, key, 1).
func (l *GuberLimiter) Allow(ctx context.Context, key string) (quotamesh.Decision, error) {
	return l.AllowN(ctx, key, 1)
}

// AllowN checks n hits of key with its rule's limit, GLOBAL behaviour.
func (l *GuberLimiter) AllowN(ctx context.Context, key string, n int64) (quotamesh.Decision, error) {
	if n <= 0 {
		return quotamesh.Decision{}, fmt.Errorf("%w: %d", quotamesh.ErrInvalidN, n)
	}
	rule, ok := l.cfg.Rules.Lookup(key)
	if !ok {
		return quotamesh.Decision{}, fmt.Errorf("%w: %q", ErrNoRule, key)
	}
	c := &guberCall{key: key, hits: n, rate: rule.Rate, done: make(chan struct{})}
	select {
	case l.queue <- c:
	case <-ctx.Done():
		return quotamesh.Decision{}, ctx.Err()
	case <-l.stop:
		return quotamesh.Decision{}, quotamesh.ErrClosed
	}
	select {
	case <-c.done:
		return c.d, c.err
	case <-ctx.Done():
		return quotamesh.Decision{}, ctx.Err()
	case <-l.stop:
		return quotamesh.Decision{}, quotamesh.ErrClosed
	}
}

// send is one sender: it takes the first queued check, every other one
// queued then (up to MaxBatch), sends them in one GetRateLimits and
// answers each.
func (l *GuberLimiter) send() {
	batch := make([]*guberCall, 0, l.cfg.MaxBatch)
	for {
		select {
		case c := <-l.queue:
			batch = append(batch[:0], c)
		case <-l.stop:
			return
		}
	more:
		for len(batch) < l.cfg.MaxBatch {
			select {
			case c := <-l.queue:
				batch = append(batch, c)
			default:
				break more
			}
		}
		l.check(batch)
	}
}

// check sends batch as one GetRateLimits and answers its calls.
func (l *GuberLimiter) check(batch []*guberCall) {
	req := &guber.GetRateLimitsReq{Requests: make([]*guber.RateLimitReq, len(batch))}
	for i, c := range batch {
		req.Requests[i] = &guber.RateLimitReq{Name: l.cfg.Name, UniqueKey: c.key, Hits: c.hits,
			Limit: c.rate.Count, Duration: c.rate.Window.Milliseconds(),
			Algorithm: guber.Algorithm_TOKEN_BUCKET, Behavior: guber.Behavior_GLOBAL}
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timeout)
	resp, err := l.v1.GetRateLimits(ctx, req)
	cancel()
	if err == nil && len(resp.Responses) != len(batch) {
		err = fmt.Errorf("%d answers to %d checks", len(resp.Responses), len(batch))
	}
	for i, c := range batch {
		switch {
		case err != nil:
			c.err = fmt.Errorf("%w: gubernator: %v", quotamesh.ErrUnavailable, err)
		case resp.Responses[i].Error != "":
			c.err = fmt.Errorf("%w: gubernator: %s", quotamesh.ErrUnavailable, resp.Responses[i].Error)
		default:
			r := resp.Responses[i]
			c.d = quotamesh.Decision{Allowed: r.Status == guber.Status_UNDER_LIMIT, Remaining: r.Remaining, Limit: c.rate}
			if !c.d.Allowed {
				c.d.RetryAfter = time.Until(time.UnixMilli(r.ResetTime))
			}
		}
		close(c.done)
	}
}

// Close stops the senders, fails the calls waiting with
// quotamesh.ErrClosed, waits for the senders and closes the connection.
func (l *GuberLimiter) Close() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
		err = l.conn.Close()
	})
	return err
}
