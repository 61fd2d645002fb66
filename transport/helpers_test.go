package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Handler that records what it is given. PeerFrame can be
// made to block per peer with stall.
type recorder struct {
	mu     sync.Mutex
	frames map[string][][]byte
	ups    map[string]int
	downs  map[string][]error
	upAt   map[string]time.Time
	downAt map[string]time.Time
	events []string // "up:x", "down:x", for order checks

	stallMu sync.Mutex
	stall   map[string]chan struct{} // PeerFrame from this peer blocks until closed

	serve   func(c *ClientConn)
	onFrame func(peer string, body []byte)
	onUp    func(peer string)
	changed chan struct{} // capacity 1: something was recorded
}

func newRecorder() *recorder {
	return &recorder{
		frames: map[string][][]byte{}, ups: map[string]int{}, downs: map[string][]error{},
		upAt: map[string]time.Time{}, downAt: map[string]time.Time{},
		stall: map[string]chan struct{}{}, changed: make(chan struct{}, 1),
	}
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) PeerFrame(peer string, body []byte) {
	r.stallMu.Lock()
	ch := r.stall[peer]
	r.stallMu.Unlock()
	if ch != nil {
		<-ch
	}
	if r.onFrame != nil {
		r.onFrame(peer, body)
	}
	r.mu.Lock()
	r.frames[peer] = append(r.frames[peer], body)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) PeerUp(peer string) {
	r.mu.Lock()
	r.ups[peer]++
	r.upAt[peer] = time.Now()
	r.events = append(r.events, "up:"+peer)
	r.mu.Unlock()
	if r.onUp != nil {
		r.onUp(peer)
	}
	r.notify()
}

func (r *recorder) PeerDown(peer string, err error) {
	r.mu.Lock()
	r.downs[peer] = append(r.downs[peer], err)
	r.downAt[peer] = time.Now()
	r.events = append(r.events, "down:"+peer)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) ServeClient(c *ClientConn) {
	if r.serve != nil {
		r.serve(c)
		return
	}
	<-c.Done()
}

func (r *recorder) upCount(peer string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ups[peer]
}

func (r *recorder) downErrs(peer string) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.downs[peer]...)
}

func (r *recorder) isUp(peer string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ups[peer] > len(r.downs[peer])
}

func (r *recorder) framesFrom(peer string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.frames[peer]...)
}

func (r *recorder) stallFrom(peer string) (release func()) {
	ch := make(chan struct{})
	r.stallMu.Lock()
	r.stall[peer] = ch
	r.stallMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.stallMu.Lock()
			delete(r.stall, peer)
			r.stallMu.Unlock()
			close(ch)
		})
	}
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

// testCA is one cluster's CA, made once per test.
func testCA(t testing.TB) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("test cluster", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func nodeCert(t testing.TB, ca *certs.CA, id string) tls.Certificate {
	t.Helper()
	b, err := ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return b.TLSCertificate()
}

func testLogger(t testing.TB) zerolog.Logger {
	level := zerolog.WarnLevel
	if os.Getenv("TRANSPORT_TEST_DEBUG") != "" {
		level = zerolog.DebugLevel
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(level).With().Timestamp().Logger()
}

// node is a Transport under test with its recorder and fault wrapper.
type node struct {
	id  string
	t   *Transport
	h   *recorder
	fn  *faultnet.Conn
	cfg Config
}

// startNode starts a Transport for id on a fresh 127.0.0.1 socket wrapped
// in faultnet (or on addr when given), closed at the end of the test.
func startNode(t testing.TB, ca *certs.CA, id string, opts ...func(*Config)) *node {
	t.Helper()
	return startNodeAt(t, ca, id, "127.0.0.1:0", opts...)
}

func startNodeAt(t testing.TB, ca *certs.CA, id, addr string, opts ...func(*Config)) *node {
	t.Helper()
	fn, err := faultnet.Listen(addr, uint64(len(id))*7919+1)
	if err != nil {
		t.Fatal(err)
	}
	h := newRecorder()
	cfg := Config{
		NodeID:      id,
		PacketConn:  fn,
		Certificate: nodeCert(t, ca, id),
		CAs:         ca.Pool(),
		Handler:     h,
		Logger:      testLogger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := New(cfg)
	if err != nil {
		_ = fn.Close()
		t.Fatalf("New(%s): %v", id, err)
	}
	n := &node{id: id, t: tr, h: h, fn: fn, cfg: cfg}
	t.Cleanup(n.close)
	return n
}

func (n *node) close() {
	_ = n.t.Close()
	_ = n.fn.Close()
}

func (n *node) addr() string { return n.t.Addr().String() }

// mesh configures every node to dial every other.
func mesh(t testing.TB, nodes ...*node) {
	t.Helper()
	for _, a := range nodes {
		peers := map[string]string{}
		for _, b := range nodes {
			if a != b {
				peers[b.id] = b.addr()
			}
		}
		if err := a.t.SetPeers(peers); err != nil {
			t.Fatalf("%s.SetPeers: %v", a.id, err)
		}
	}
}

func waitMesh(t testing.TB, bound time.Duration, nodes ...*node) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			for a.t.peerConnUp(b.id) == nil {
				if time.Now().After(deadline) {
					t.Fatalf("%s does not see %s up within %v; peers: %+v", a.id, b.id, bound, a.t.Peers())
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
}

// peerConnUp returns the up connection to id, if any.
func (t *Transport) peerConnUp(id string) *peerConn {
	p := t.peerByID(id)
	if p == nil {
		return nil
	}
	return p.sendConn.Load()
}

// sendRetry sends body, retrying while the mailbox is busy.
func sendRetry(t testing.TB, from *node, to string, body []byte, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		err := from.t.Send(to, body)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrBusy) && !errors.Is(err, ErrNotConnected) {
			t.Fatalf("%s.Send(%s): %v", from.id, to, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s.Send(%s) still %v after %v", from.id, to, err, bound)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func frameBody(from string, i int) []byte { return []byte(fmt.Sprintf("%s#%06d", from, i)) }

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitStable waits until each pair of nodes has one connection, up on both
// ends, and no dial in flight that could still replace it.
func waitStable(t testing.TB, bound time.Duration, nodes ...*node) {
	t.Helper()
	waitMesh(t, bound, nodes...)
	eventually(t, bound, "a stable mesh", func() bool {
		for _, x := range nodes {
			for _, y := range nodes {
				if x == y {
					continue
				}
				cx, cy := x.t.peerConnUp(y.id), y.t.peerConnUp(x.id)
				if cx == nil || cy == nil || cx.outbound == cy.outbound || x.t.livePeerConns(y.id) != 1 || x.t.peerByID(y.id).dialing.Load() {
					return false
				}
			}
		}
		return true
	})
}
