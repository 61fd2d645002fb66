package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
	"github.com/quotamesh/quotamesh/window"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer is a lone node for the SDK's tests: a transport listener whose
// ServeClient answers ClientBatch frames with an engine.Engine (members:
// itself, ticked every 20 ms as a node does) and AdminRequest frames with
// canned answers over the engine's limit table. Its mapping of engine
// results to replies is the one design.md §10 asks of node/.
type testServer struct {
	t   testing.TB
	id  string
	tr  *transport.Transport
	fn  *faultnet.Conn
	eng *engine.Engine

	mu     sync.Mutex
	index  uint64
	seen   []wire.ClientRequest
	record atomic.Bool
	grants []grantRecord // while record is set

	batches     atomic.Int64 // ClientBatch frames received
	requests    atomic.Int64 // requests in them
	leases      atomic.Int64 // OpLease requests
	decides     atomic.Int64 // OpDecide requests
	decided     atomic.Int64 // tokens OpDecide requests admitted
	lastDecided atomic.Int64 // the Decided of the latest reply to OpDecide
	wanted      atomic.Int64 // requests asking for a lease (Want > 0)
	granted     atomic.Int64 // lease tokens granted
	offered     atomic.Int64 // Offered reported
	settled     atomic.Int64 // settlements (SettleID set)
	used        atomic.Int64 // SettleUsed reported
	conns       atomic.Uint64
	members     atomic.Pointer[[]wire.Member] // AdminMembers' answer; nil: this node alone
	delay       atomic.Int64                  // nanoseconds to sleep before answering a batch
	mute        atomic.Bool                   // read but never answer
	drain       atomic.Bool                   // answer every request with CodeShuttingDown
	overload    atomic.Bool                   // answer every request without a settlement CodeOverloaded, as a node past ClientMaxWait
	adminHook   atomic.Pointer[func(*wire.AdminRequest) *wire.AdminReply]

	stop    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.Once
}

// testCA is shared by a test's servers and clients.
type testCA struct {
	ca     *certs.CA
	client tls.Certificate
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca, err := certs.NewCA("client test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.IssueClient("admin", certs.RoleAdmin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca, client: b.TLSCertificate()}
}

// opts are the client options to reach servers signed by this CA.
func (ca *testCA) opts(t testing.TB, more ...Option) []Option {
	return append([]Option{WithCA(ca.ca.Pool()), WithCertificate(ca.client), WithLogger(testLogger(t))}, more...)
}

func testLogger(t testing.TB) zerolog.Logger {
	level := zerolog.WarnLevel
	if os.Getenv("CLIENT_TEST_DEBUG") != "" {
		level = zerolog.DebugLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(level).With().Timestamp().Logger()
}

// newTestServer starts a lone node id with rules, closed at the end of the
// test.
func newTestServer(t testing.TB, ca *testCA, id string, rules ...limits.Rule) *testServer {
	t.Helper()
	return newTestServerAt(t, ca, id, "127.0.0.1:0", rules...)
}

// newTestServerAt starts a lone node id listening on addr.
func newTestServerAt(t testing.TB, ca *testCA, id, addr string, rules ...limits.Rule) *testServer {
	t.Helper()
	table, err := limits.NewTable(rules...)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	// UnknownKeys is set explicitly: engine.Lease reads the zero
	// PolicyDefault as deny while the registry reads it as allow (reported
	// to the engine's owner).
	cfg := engine.Config{Node: id, Registry: window.Config{UnknownKeys: window.PolicyAllow}}
	eng, err := engine.New(cfg, table, []string{id}, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := faultnet.Listen(addr, uint64(len(id))*7919+1)
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, id: id, fn: fn, eng: eng, stop: make(chan struct{})}
	tr, err := transport.New(transport.Config{
		NodeID:      id,
		PacketConn:  fn,
		Certificate: b.TLSCertificate(),
		CAs:         ca.ca.Pool(),
		Handler:     s,
		Logger:      testLogger(t).With().Str("server", id).Logger(),
	})
	if err != nil {
		_ = fn.Close()
		t.Fatal(err)
	}
	s.tr = tr
	s.wg.Add(1)
	go s.tick()
	t.Cleanup(s.kill)
	return s
}

func (s *testServer) addr() string { return s.fn.LocalAddr().String() }

// kill stops the node at once: its connections close (the clients see a
// CONNECTION_CLOSE).
func (s *testServer) kill() {
	s.closeMu.Do(func() {
		close(s.stop)
		s.wg.Wait()
		_ = s.tr.Close()
		_ = s.fn.Close()
	})
}

// silence makes the node drop every datagram it sends, to its clients and
// to anyone dialing it: a node that died without a word.
func (s *testServer) silence() {
	if err := s.fn.SetFaults(faultnet.Faults{Drop: 1}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *testServer) tick() {
	defer s.wg.Done()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			rd := s.eng.Tick(time.Now().UnixNano())
			rd.Send(func(string, *wire.Sync) error { return nil })
			s.eng.Advance(rd)
		}
	}
}

func (s *testServer) PeerFrame(string, []byte) {}
func (s *testServer) PeerUp(string)            {}
func (s *testServer) PeerDown(string, error)   {}
func (s *testServer) recorded() []wire.ClientRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.ClientRequest(nil), s.seen...)
}

// ServeClient serves every stream the client opens, each in a goroutine,
// until the connection ends.
func (s *testServer) ServeClient(c *transport.ClientConn) {
	conn := s.conns.Add(1)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.Done():
		case <-s.stop:
			_ = c.Close()
		}
		cancel()
	}()
	for {
		st, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			s.serveStream(st, c, conn)
		}()
	}
}

func (s *testServer) serveStream(st *transport.Stream, c *transport.ClientConn, conn uint64) {
	br := bufio.NewReader(st)
	dec := wire.NewDecoder()
	enc := wire.NewEncoder()
	var out []byte
	for {
		body, err := wire.ReadFrame(br, wire.MaxFrame)
		if err != nil {
			return
		}
		m, err := dec.Decode(body)
		if err != nil {
			s.t.Errorf("server %s: undecodable frame: %v", s.id, err)
			return
		}
		var reply wire.Message
		switch m := m.(type) {
		case *wire.ClientBatch:
			if s.mute.Load() {
				continue
			}
			if d := s.delay.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			reply = s.answer(m, conn)
		case *wire.AdminRequest:
			reply = s.admin(m, c)
		default:
			s.t.Errorf("server %s: unexpected %T from a client", s.id, m)
			return
		}
		out, err = enc.Append(out[:0], reply)
		if err != nil {
			s.t.Errorf("server %s: encode %T: %v", s.id, reply, err)
			return
		}
		if _, err := st.Write(out); err != nil {
			return
		}
	}
}

// answer decides a batch with the engine, as node/ does.
func (s *testServer) answer(b *wire.ClientBatch, conn uint64) *wire.ClientReplies {
	s.batches.Add(1)
	s.requests.Add(int64(len(b.Items)))
	if s.record.Load() {
		s.mu.Lock()
		s.seen = append(s.seen, b.Items...)
		s.mu.Unlock()
	}
	out := &wire.ClientReplies{Items: make([]wire.ClientReply, len(b.Items))}
	for i := range b.Items {
		q, r := &b.Items[i], &out.Items[i]
		r.ID = q.ID
		if s.drain.Load() {
			r.Code = wire.CodeShuttingDown
			continue
		}
		if s.overload.Load() && q.SettleID == 0 && q.Offered == 0 {
			r.Code = wire.CodeOverloaded
			continue
		}
		now := time.Now().UnixNano()
		switch q.Op {
		case wire.OpDecide:
			s.decides.Add(1)
			if q.N <= 0 {
				r.Code, r.Message = wire.CodeInvalidN, "n must be positive"
				continue
			}
		case wire.OpLease:
			s.leases.Add(1)
		default:
			r.Code = wire.CodeBadRequest
			continue
		}
		s.offered.Add(q.Offered)
		if q.SettleID != 0 {
			s.settled.Add(1)
			s.used.Add(q.SettleUsed)
		}
		if q.Want > 0 {
			s.wanted.Add(1)
		}
		g, err := s.eng.Request(now, engine.Request{Key: q.Key, Client: conn, N: q.N, Want: q.Want, Offered: q.Offered, SettleID: q.SettleID, SettleUsed: q.SettleUsed})
		r.Allowed, r.LeaseID, r.Granted, r.TTL = g.Allowed, g.LeaseID, g.Granted, g.TTL
		r.Remaining, r.RetryAfter, r.Limit, r.Unlimited = g.Remaining, g.RetryAfter, g.Limit, g.Unlimited
		r.Code, r.Message = codeOf(err)
		if err == nil && q.Op == wire.OpDecide {
			r.Decided = now // as node/ does on a quotamesh-client/3 connection
			s.lastDecided.Store(now)
		}
		if err == nil && q.N > 0 && g.Allowed {
			s.decided.Add(q.N)
		}
		s.granted.Add(g.Granted)
		if s.record.Load() && q.Want > 0 {
			s.mu.Lock()
			s.grants = append(s.grants, grantRecord{at: now, want: q.Want, granted: g.Granted, retry: g.RetryAfter})
			s.mu.Unlock()
		}
		if r.Code == wire.CodeTooManyKeys {
			r.Allowed = false // the registry's default WhenFull policy: deny
		}
	}
	return out
}

// cluster makes the servers answer AdminMembers with all of them.
func cluster(servers ...*testServer) {
	ms := make([]wire.Member, 0, len(servers))
	for _, s := range servers {
		ms = append(ms, wire.Member{Node: s.id, Addr: s.addr()})
	}
	for _, s := range servers {
		s.members.Store(&ms)
	}
}

// grantRecord is one lease the test node answered.
type grantRecord struct {
	at, want, granted int64
	retry             time.Duration
}

// codeOf maps an engine error to its reply code and message.
func codeOf(err error) (wire.Code, string) {
	switch {
	case err == nil:
		return wire.CodeOK, ""
	case errors.Is(err, limits.ErrInvalidKey):
		return wire.CodeInvalidKey, err.Error()
	case errors.Is(err, window.ErrInvalidN), errors.Is(err, engine.ErrInvalidRequest):
		return wire.CodeInvalidN, err.Error()
	case errors.Is(err, window.ErrExceedsLimit):
		return wire.CodeExceedsLimit, err.Error()
	case errors.Is(err, window.ErrTooManyKeys):
		return wire.CodeTooManyKeys, err.Error()
	}
	return wire.CodeInternal, err.Error()
}

// admin answers admin requests over the engine's table, or with what the
// hook says.
func (s *testServer) admin(q *wire.AdminRequest, c *transport.ClientConn) *wire.AdminReply {
	if h := s.adminHook.Load(); h != nil {
		r := (*h)(q)
		r.ID = q.ID
		return r
	}
	r := &wire.AdminReply{ID: q.ID}
	s.mu.Lock()
	defer s.mu.Unlock()
	table := s.eng.Table()
	switch q.Op {
	case wire.AdminLimitSet:
		if err := q.Rule.Validate(); err != nil {
			r.Code, r.Message = wire.CodeInvalidRate, err.Error()
			return r
		}
		t, err := table.With(q.Rule)
		if err != nil {
			r.Code, r.Message = wire.CodeInvalidRate, err.Error()
			return r
		}
		s.eng.SetTable(t)
		s.index++
		r.Index = s.index
	case wire.AdminLimitDelete:
		t, err := table.Without(q.Pattern)
		if err != nil {
			r.Code, r.Message = wire.CodeNoRule, err.Error()
			return r
		}
		s.eng.SetTable(t)
		s.index++
		r.Index = s.index
	case wire.AdminLimitGet:
		rule, ok := table.Get(q.Pattern)
		if !ok {
			r.Code, r.Message = wire.CodeNoRule, "no rule "+q.Pattern
			return r
		}
		r.Rules = []limits.Rule{rule}
	case wire.AdminLimitList:
		r.Rules = table.Rules()
	case wire.AdminStatus:
		st, err := json.Marshal(s.eng.Status(time.Now().UnixNano(), 10))
		if err != nil {
			r.Code, r.Message = wire.CodeInternal, err.Error()
			return r
		}
		r.Status = st
	case wire.AdminMembers:
		if ms := s.members.Load(); ms != nil {
			r.Members = *ms
		} else {
			r.Members = []wire.Member{{Node: s.id, Addr: s.addr()}}
		}
	case wire.AdminJoin, wire.AdminLeave:
		if c.Identity().Name != "admin" {
			r.Code = wire.CodeForbidden
			return r
		}
		s.index++
		r.Index = s.index
	}
	return r
}

// rule is a test shorthand: rule("k", "1000/s").
func rule(pattern, rate string) limits.Rule {
	return limits.Rule{Pattern: pattern, Rate: limits.MustParseRate(rate)}
}

// dialT dials addrs with ca's options, closed at the end of the test.
func dialT(t testing.TB, ca *testCA, addrs []string, more ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addrs, ca.opts(t, more...)...)
	if err != nil {
		t.Fatalf("Dial(%v): %v", addrs, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond until it holds or the bound passes.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", bound, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
