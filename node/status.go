package node

import (
	"crypto/x509"
	"math"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/limits"
)

// Status is a snapshot of a node for `quotamesh status`, /status and the
// admin status request. It encodes to JSON as is; durations are
// nanoseconds.
type Status struct {
	Node        string `json:"node"`
	ClusterID   string `json:"cluster_id"`
	Incarnation uint64 `json:"incarnation"`
	Addr        string `json:"addr"`
	Advertise   string `json:"advertise"`
	AdminAddr   string `json:"admin_addr,omitempty"`
	// Ready is what /readyz answers; NotReady says why not.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready,omitempty"`
	// Serving reports that decisions are answered (a member that has heard
	// a majority since it became one).
	Serving bool          `json:"serving"`
	Fenced  bool          `json:"fenced"`
	Policy  string        `json:"policy"`
	Uptime  time.Duration `json:"uptime_ns"`
	Raft    RaftStatus    `json:"raft"`
	// Members are the cluster's members as Raft lists them, with what this
	// node sees of each.
	Members []MemberStatus `json:"members"`
	// AdmittedPerSec and OfferedPerSec are this node's own decisions over
	// the last second, in tokens (leases included).
	AdmittedPerSec float64 `json:"admitted_per_sec"`
	OfferedPerSec  float64 `json:"offered_per_sec"`
	Keys           int     `json:"keys"`
	StoreBytes     int     `json:"store_bytes"`
	// TopKeys are the keys this node admits most, with every node's count
	// and this node's share.
	TopKeys []KeyStatus `json:"top_keys"`
	// Shadow lists the shadow rules and what each would have denied on
	// this node.
	Shadow []ShadowStatus `json:"shadow,omitempty"`
	// ClockCorrection is what alignment adds to this node's clock;
	// ClockSkew is the offset only the fault layer sets (0 otherwise).
	ClockCorrection time.Duration `json:"clock_correction_ns"`
	ClockSkew       time.Duration `json:"clock_skew_ns"`
	// Clients is what this node asks of clients. AllowAnonymous is the
	// insecure opt-out: clients without a certificate may decide.
	Clients ClientsStatus `json:"clients"`
	// CertificateExpires is when this node's certificate expires.
	CertificateExpires time.Time `json:"certificate_expires"`
}

// ClientsStatus is the client policy in effect and the connections open.
type ClientsStatus struct {
	AllowAnonymous bool    `json:"allow_anonymous"`
	MaxConns       int     `json:"max_conns"`
	HandshakeRate  float64 `json:"handshake_rate"`
	HandshakeBurst int     `json:"handshake_burst"`
}

// RaftStatus is this node's Raft replica.
type RaftStatus struct {
	State        string        `json:"state"`
	Leader       string        `json:"leader"`
	LeaderAddr   string        `json:"leader_addr"`
	Term         uint64        `json:"term"`
	CommitIndex  uint64        `json:"commit_index"`
	AppliedIndex uint64        `json:"applied_index"`
	TableIndex   uint64        `json:"table_index"`
	Rules        int           `json:"rules"`
	Voters       int           `json:"voters"`
	NonVoters    int           `json:"non_voters"`
	LastContact  time.Duration `json:"last_contact_ns"`
}

// MemberStatus is one member as this node sees it.
type MemberStatus struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Self   bool   `json:"self"`
	Voter  bool   `json:"voter"`
	Leader bool   `json:"leader"`
	// Connected, Reachable and Reclaimed are the sync view: a connection is
	// up; the member was heard within DeadAfter; its share was reclaimed.
	Connected   bool   `json:"connected"`
	Reachable   bool   `json:"reachable"`
	Reclaimed   bool   `json:"reclaimed"`
	Incarnation uint64 `json:"incarnation"`
	// SyncLag is how long ago the last sync frame from the member was
	// accepted (-1 if never).
	SyncLag  time.Duration `json:"sync_lag_ns"`
	RTT      time.Duration `json:"rtt_ns"`
	BytesIn  uint64        `json:"bytes_in"`
	BytesOut uint64        `json:"bytes_out"`
}

// KeyStatus is one key: the engine's view plus every node's admission rate.
type KeyStatus struct {
	engine.KeyStatus
	// PerNodePerSec is every node's window count divided by the window.
	PerNodePerSec map[string]float64 `json:"per_node_per_sec"`
}

// Status returns a snapshot of the node with up to topKeys keys. It reads
// every key the node tracks (engine.Status), under the engine's lock: call
// it on demand, not in a loop.
func (n *Node) Status(topKeys int) Status {
	now := n.now()
	es := n.eng.Status(now, max(topKeys, 0))
	rs := n.store.Stats()
	leaderID, leaderAddr := n.store.Leader()
	st := Status{
		Node:            n.cfg.ID,
		ClusterID:       n.cfg.ClusterID,
		Incarnation:     es.Incarnation,
		Addr:            n.Addr(),
		Advertise:       n.advertise,
		AdminAddr:       n.AdminAddr(),
		NotReady:        n.notReady(),
		Serving:         n.state.Load() == stateServing,
		Fenced:          es.Fenced,
		Policy:          es.Policy,
		Uptime:          n.wall().Sub(n.started),
		Keys:            es.Keys,
		StoreBytes:      es.StoreBytes,
		AdmittedPerSec:  n.rates.admitted.get(),
		OfferedPerSec:   n.rates.offered.get(),
		ClockCorrection: n.eng.Correction(),
		ClockSkew:       n.skew.Offset(),
		Raft: RaftStatus{
			State: rs.State, Leader: leaderID, LeaderAddr: leaderAddr, Term: rs.Term,
			CommitIndex: rs.CommitIndex, AppliedIndex: rs.AppliedIndex, TableIndex: rs.TableIndex,
			Rules: rs.Rules, Voters: rs.Voters, NonVoters: rs.NonVoters, LastContact: rs.LastContact,
		},
	}
	st.Ready = len(st.NotReady) == 0
	p := n.tr.ClientPolicy()
	st.Clients = ClientsStatus{AllowAnonymous: p.AllowAnonymous, MaxConns: p.MaxClientConns, HandshakeRate: p.HandshakeRate, HandshakeBurst: p.HandshakeBurst}
	st.CertificateExpires = n.tr.Certificate().NotAfter.UTC()
	st.Shadow = n.shadow.status()
	engineMembers := make(map[string]engine.MemberStatus, len(es.Members))
	for _, m := range es.Members {
		engineMembers[m.ID] = m
	}
	peers := make(map[string]int)
	tp := n.tr.Peers()
	for i, p := range tp {
		peers[p.ID] = i
	}
	wall := n.wall()
	n.peersMu.Lock()
	for _, m := range n.membership() {
		ms := MemberStatus{ID: m.ID, Addr: m.Address, Self: m.ID == n.cfg.ID, Voter: m.Voter, Leader: m.Leader, SyncLag: -1}
		if em, ok := engineMembers[m.ID]; ok {
			ms.Reachable, ms.Reclaimed, ms.Incarnation = em.Reachable, em.Reclaimed, em.Incarnation
		}
		if ms.Self {
			ms.Connected, ms.SyncLag = true, 0
		} else if i, ok := peers[m.ID]; ok {
			p := tp[i]
			ms.Connected, ms.RTT, ms.BytesIn, ms.BytesOut = p.Connected, p.RTT, p.BytesIn, p.BytesOut
		}
		if at, ok := n.lastFrame[m.ID]; ok {
			ms.SyncLag = wall.Sub(at)
		}
		st.Members = append(st.Members, ms)
	}
	n.peersMu.Unlock()
	for _, k := range es.TopKeys {
		ks := KeyStatus{KeyStatus: k, PerNodePerSec: make(map[string]float64, len(k.PerNode))}
		if rate, err := limits.ParseRate(k.Limit); err == nil && rate.Window > 0 {
			for id, c := range k.PerNode {
				ks.PerNodePerSec[id] = float64(c) / rate.Window.Seconds()
			}
		}
		st.TopKeys = append(st.TopKeys, ks)
	}
	return st
}

// rateTracker holds this node's decision rates over the last second, which
// housekeeping computes and Status reads.
type rateTracker struct {
	admitted, offered atomicFloat
}

type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) set(v float64) { f.bits.Store(math.Float64bits(v)) }
func (f *atomicFloat) get() float64  { return math.Float64frombits(f.bits.Load()) }

// lastCounts are the cumulative figures the previous refresh saw, so that
// counters grow by what changed. Only the housekeeping goroutine uses them.
type lastCounts struct {
	at                          time.Time
	admitted, offered, denied   int64
	unlimited, rejected         int64
	leaseGranted, leaseReturned int64
	frames                      map[string]int64
	bytes                       map[[2]string]uint64
	rules                       map[string]ruleLast
}

// ruleLast is what the previous refresh saw of one rule.
type ruleLast struct {
	admitted, denied, rejected int64
}

// grow returns how much a cumulative count grew since last (all of it if it
// restarted below last) and stores it.
func grow[T int64 | uint64](last *T, now T) T {
	d := now - *last
	if now < *last {
		d = now
	}
	*last = now
	return d
}

// refreshMetrics turns the engine's, the registry's, Raft's and the
// transport's cumulative figures into metrics. It runs every second on the
// housekeeping goroutine.
func (n *Node) refreshMetrics(last *lastCounts) {
	now := n.wall()
	c := n.eng.Counters()
	rst := n.eng.Registry().Stats()
	m := n.m
	dAdm := grow(&last.admitted, c.Admitted)
	dOff := grow(&last.offered, c.Offered)
	if denied := c.Offered - c.Admitted; denied > last.denied {
		// Lease grants are admitted before the SDK reports what it was
		// offered, so the difference may dip; count only its growth.
		m.decisions.WithLabelValues("denied").Add(float64(denied - last.denied))
		last.denied = denied
	}
	m.decisions.WithLabelValues("allowed").Add(float64(dAdm))
	m.decisions.WithLabelValues("unlimited").Add(float64(grow(&last.unlimited, rst.Unlimited)))
	rejected := grow(&last.rejected, rst.Rejected)
	m.decisions.WithLabelValues("rejected").Add(float64(rejected))
	m.keysRejected.Add(float64(rejected))
	m.leaseTokens.WithLabelValues("granted").Add(float64(grow(&last.leaseGranted, c.LeaseGranted)))
	m.leaseTokens.WithLabelValues("returned").Add(float64(grow(&last.leaseReturned, c.LeaseReturned)))
	if last.frames == nil {
		last.frames = make(map[string]int64)
		last.bytes = make(map[[2]string]uint64)
	}
	for reason, v := range c.FramesRejected {
		prev := last.frames[reason]
		if d := grow(&prev, v); d > 0 {
			m.framesRejected.WithLabelValues(reason).Add(float64(d))
		}
		last.frames[reason] = prev
	}
	n.refreshRuleMetrics(last, c.Rules)
	if !last.at.IsZero() {
		if secs := now.Sub(last.at).Seconds(); secs > 0 {
			n.rates.admitted.set(float64(dAdm) / secs)
			n.rates.offered.set(float64(dOff) / secs)
		}
	}
	last.at = now

	m.keys.Set(float64(n.eng.Registry().Len()))
	fenced := n.eng.Fenced()
	m.fenced.Set(b2f(fenced))
	m.ready.Set(b2f(n.Ready()))
	state := n.store.State()
	for _, s := range raftStates {
		m.raftState.WithLabelValues(s).Set(b2f(s == state))
	}
	m.raftApplied.Set(float64(n.store.AppliedIndex()))
	m.limitRules.Set(float64(n.store.Table().Len()))
	m.clockCorrection.Set(n.eng.Correction().Seconds())
	m.clockSkew.Set(n.skew.Offset().Seconds())

	members := n.memberSet()
	for _, p := range n.tr.Peers() {
		if !members[p.ID] {
			continue
		}
		m.peerUp.WithLabelValues(p.ID).Set(b2f(p.Connected))
		for _, dir := range []struct {
			name string
			v    uint64
		}{{"in", p.BytesIn}, {"out", p.BytesOut}} {
			k := [2]string{p.ID, dir.name}
			prev := last.bytes[k]
			m.syncBytes.WithLabelValues(p.ID, dir.name).Add(float64(grow(&prev, dir.v))) // exported from the start, at 0
			last.bytes[k] = prev
		}
	}
	for k := range last.bytes {
		if !members[k[0]] {
			delete(last.bytes, k)
		}
	}
	n.peersMu.Lock()
	for id := range members {
		lag := now.Sub(n.started)
		if at, ok := n.lastFrame[id]; ok {
			lag = now.Sub(at)
		}
		m.syncLag.WithLabelValues(id).Set(lag.Seconds())
	}
	n.peersMu.Unlock()
}

// refreshRuleMetrics turns the engine's counts by rule and the registry's
// key budgets into the per-rule metrics; the rules are the table's, and a
// deleted rule's series go.
func (n *Node) refreshRuleMetrics(last *lastCounts, counts map[string]engine.RuleCounts) {
	m := n.m
	budgets := n.eng.Registry().RuleKeys()
	if last.rules == nil {
		last.rules = make(map[string]ruleLast)
	}
	for p, rk := range budgets {
		prev := last.rules[p]
		c := counts[p]
		m.ruleDecisions.WithLabelValues(p, "allowed").Add(float64(grow(&prev.admitted, c.Admitted)))
		if denied := c.Offered - c.Admitted; denied > prev.denied {
			// As for quotamesh_decisions_total: count only its growth.
			m.ruleDecisions.WithLabelValues(p, "denied").Add(float64(denied - prev.denied))
			prev.denied = denied
		} else {
			m.ruleDecisions.WithLabelValues(p, "denied")
		}
		m.ruleKeys.WithLabelValues(p).Set(float64(rk.Keys))
		m.ruleKeysRejected.WithLabelValues(p).Add(float64(grow(&prev.rejected, rk.Rejected)))
		last.rules[p] = prev
	}
	for p := range last.rules {
		if _, ok := budgets[p]; !ok {
			delete(last.rules, p)
			m.forgetRule(p)
		}
	}
}

// setCertMetrics exports when the certificate in use and its CA expire.
func (n *Node) setCertMetrics() {
	leaf := n.tr.Certificate()
	n.m.certExpiry.WithLabelValues("node").Set(float64(leaf.NotAfter.Unix()))
	caExpiry := leaf.NotAfter
	if chains, err := leaf.Verify(x509.VerifyOptions{Roots: n.tr.CAs(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		for _, ch := range chains {
			caExpiry = ch[len(ch)-1].NotAfter
			break
		}
	}
	n.m.certExpiry.WithLabelValues("ca").Set(float64(caExpiry.Unix()))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
