package node

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/transport"
)

// rawPeer is a bare transport that plays a peer: it sends whatever frames
// a test gives it.
type rawPeer struct {
	t  testing.TB
	id string
	tr *transport.Transport
	pc *faultnet.Conn

	mu sync.Mutex
	up map[string]bool
}

func (p *rawPeer) PeerUp(peer string) {
	p.mu.Lock()
	p.up[peer] = true
	p.mu.Unlock()
}

func (p *rawPeer) PeerDown(peer string, _ error) {
	p.mu.Lock()
	p.up[peer] = false
	p.mu.Unlock()
}

func (p *rawPeer) PeerFrame(string, []byte)            {}
func (p *rawPeer) ServeClient(c *transport.ClientConn) { <-c.Done() }

func (p *rawPeer) isUp(peer string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up[peer]
}

func newRawPeer(t testing.TB, c *cluster, id string) *rawPeer {
	t.Helper()
	pc, err := faultnet.Listen("127.0.0.1:0", 7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.ca.IssueNode(id, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{t: t, id: id, pc: pc, up: map[string]bool{}}
	p.tr, err = transport.New(transport.Config{
		NodeID: id, PacketConn: pc, Certificate: b.TLSCertificate(), CAs: c.ca.Pool(), Handler: p,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.tr.Close()
		_ = pc.Close()
	})
	return p
}

// send queues body to peer, waiting while the previous frame is written.
func (p *rawPeer) send(peer string, body []byte) {
	p.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := p.tr.Send(peer, body)
		if err == nil {
			return
		}
		if !errors.Is(err, transport.ErrBusy) || time.Now().After(deadline) {
			p.t.Fatalf("%s: send to %s: %v", p.id, peer, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func (p *rawPeer) sendMsg(peer string, m wire.Message) {
	p.t.Helper()
	b, err := wire.Encode(m)
	if err != nil {
		p.t.Fatal(err)
	}
	p.send(peer, b)
}

// heartbeat is a valid sync frame from origin with nothing but its asOf.
func heartbeat(seq uint64, from crdt.OriginID) *wire.Sync {
	return &wire.Sync{Seq: seq, Delta: crdt.Delta{
		From: from, Seq: seq, Full: true, Parts: 1,
		Origins: []crdt.OriginState{{ID: from, AsOf: time.Now().UnixNano()}},
	}}
}

// TestPeerFramesRefused sends bad frames from a connected member, and valid
// ones from a node that is not a member: each is refused with its reason in
// the metric, and none reaches the store.
func TestPeerFramesRefused(t *testing.T) {
	c := newCluster(t, 1)
	n1 := c.nodes["n1"]
	m2 := newRawPeer(t, c, "m2")
	rogue := newRawPeer(t, c, "rogue")
	reg := prometheus.NewRegistry()
	// n1 lists m2 as a voter: it dials m2, and cannot elect itself (m2
	// speaks no Raft), which this test does not need.
	c.start(n1, func(cfg *Config) {
		cfg.Bootstrap = []Peer{{ID: "n1", Addr: n1.addr}, {ID: "m2", Addr: m2.pc.LocalAddr().String()}}
		cfg.Registerer = reg
		cfg.Logger = zerolog.Nop() // Raft complains about m2 all along
	})
	if err := rogue.tr.SetPeers(map[string]string{"n1": n1.addr}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "m2 and rogue connected to n1", func() string {
		if !m2.isUp("n1") || !rogue.isUp("n1") {
			return fmt.Sprintf("m2 up %v, rogue up %v", m2.isUp("n1"), rogue.isUp("n1"))
		}
		return ""
	})
	self := crdt.OriginID{Node: "m2", Incarnation: 7}
	m2.send("n1", []byte{0xc1, 0xc1})                                                                            // malformed
	m2.sendMsg("n1", &wire.ClientBatch{Items: []wire.ClientRequest{{ID: 1, Op: wire.OpDecide, Key: "k", N: 1}}}) // unexpected_type
	m2.sendMsg("n1", &wire.Hello{ClusterID: "other", Node: "m2", Incarnation: 7, Addr: "127.0.0.1:1"})           // cluster
	m2.sendMsg("n1", &wire.Hello{ClusterID: "quotamesh", Node: "m9", Incarnation: 7, Addr: "127.0.0.1:1"})       // sender
	m2.sendMsg("n1", &wire.Hello{ClusterID: "quotamesh", Node: "m2", Incarnation: 7, Addr: "127.0.0.1:1"})       // accepted
	m2.sendMsg("n1", heartbeat(1, self))                                                                         // accepted
	m2.sendMsg("n1", heartbeat(1, self))                                                                         // replay
	m2.sendMsg("n1", heartbeat(2, crdt.OriginID{Node: "m9", Incarnation: 3}))                                    // sender
	rogue.sendMsg("n1", &wire.Hello{ClusterID: "quotamesh", Node: "rogue", Incarnation: 9, Addr: "127.0.0.1:1"})
	rogue.sendMsg("n1", heartbeat(1, crdt.OriginID{Node: "rogue", Incarnation: 9}))

	want := map[string]float64{"malformed": 1, "unexpected_type": 1, "cluster": 1, "sender": 2, "replay": 1, "member": 2}
	eventually(t, 5*time.Second, "every refusal counted", func() string {
		for reason, v := range want {
			if got := metricValue(t, reg, metricFramesRejected, map[string]string{"reason": reason}); got != v {
				return fmt.Sprintf("%s = %v, want %v", reason, got, v)
			}
		}
		return ""
	})
	if got := n1.eng.Counters().Merged; got != 1 {
		t.Errorf("n1 merged %d deltas; want the one valid frame from the member", got)
	}
	for _, m := range n1.eng.Status(n1.now(), 0).Members {
		switch m.ID {
		case "m2":
			if m.Incarnation != 7 {
				t.Errorf("m2's incarnation %d; want 7 from its hello", m.Incarnation)
			}
		case "rogue":
			t.Error("a non-member became a member")
		}
	}
}

// TestForwardedJoinNeedsItsOwnIdentity has a node whose certificate says
// "rogue" ask, through the forwarding protocol, that a node "n9" be added:
// the seed refuses it, since a node that is not a member may only join as
// itself, and the membership does not change.
func TestForwardedJoinNeedsItsOwnIdentity(t *testing.T) {
	c := newCluster(t, 1)
	reg := prometheus.NewRegistry()
	n1 := c.nodes["n1"]
	c.start(n1, func(cfg *Config) {
		cfg.Bootstrap = c.bootstrap()
		cfg.Registerer = reg
	})
	c.waitReady(10 * time.Second)

	rogue := newRawPeer(t, c, "rogue")
	raftLayer, err := rogue.tr.StreamLayer(kindRaft)
	if err != nil {
		t.Fatal(err)
	}
	fwdLayer, err := rogue.tr.StreamLayer(kindForward)
	if err != nil {
		t.Fatal(err)
	}
	defer fwdLayer.Close()
	store, err := consensus.Open(consensus.Config{
		NodeID: "n9", Address: rogue.pc.LocalAddr().String(), DataDir: t.TempDir(),
		Layer: raftLayer, Forwarder: &forwarder{layer: fwdLayer, timeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.JoinVia(ctxT(t, 1500*time.Millisecond), n1.addr)
	if !errors.Is(err, consensus.ErrForbidden) {
		t.Errorf("JoinVia as n9 with rogue's certificate: %v; want ErrForbidden", err)
	}
	if ms := n1.membership(); len(ms) != 1 {
		t.Errorf("membership %v after a refused join", ms)
	}
	if got := metricValue(t, reg, metricForwardRefused, nil); got < 1 {
		t.Errorf("%s = %v; want the refusals counted", metricForwardRefused, got)
	}
}
