package node

import (
	"runtime"
	"runtime/debug"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quotamesh/quotamesh/internal/wire"
)

// Metric names (design.md §11). Label values are bounded: peer labels only
// ever hold members' IDs (and are deleted when a member leaves), results,
// reasons, states, kinds, ops and codes are enums; a user key is never a
// label.
const (
	metricDecisions        = "quotamesh_decisions_total"       // {result=allowed|denied|unlimited|rejected}, tokens
	metricKeys             = "quotamesh_keys"                  // windows held
	metricKeysRejected     = "quotamesh_keys_rejected_total"   // new keys refused: MaxKeys reached
	metricPeerUp           = "quotamesh_peer_up"               // {peer}
	metricSyncLag          = "quotamesh_sync_lag_seconds"      // {peer}: since the last sync frame accepted from it
	metricSyncBytes        = "quotamesh_sync_bytes_total"      // {peer, direction=in|out}
	metricFramesRejected   = "quotamesh_frames_rejected_total" // {reason}
	metricFenced           = "quotamesh_fenced"                // 1 while fenced
	metricReady            = "quotamesh_ready"                 // 1 while /readyz answers 200
	metricRaftState        = "quotamesh_raft_state"            // {state}: 1 for the current state
	metricRaftApplied      = "quotamesh_raft_applied_index"    // last log index applied to the table
	metricLimitRules       = "quotamesh_limit_rules"           // rules in the table
	metricLeaseTokens      = "quotamesh_lease_tokens_total"    // {kind=granted|returned}
	metricTick             = "quotamesh_tick_seconds"          // histogram of one sync tick
	metricClockCorrection  = "quotamesh_clock_correction_seconds"
	metricClockSkew        = "quotamesh_clock_skew_seconds"            // the offset only the fault layer sets
	metricClientRequests   = "quotamesh_client_requests_total"         // {op, code}
	metricForwardRefused   = "quotamesh_forward_refused_total"         // forwarded consensus requests refused
	metricBuildInfo        = "quotamesh_build_info"                    // {version, revision, go_version}: 1
	metricCertExpiry       = "quotamesh_cert_expiry_timestamp_seconds" // {cert=node|ca}: NotAfter, Unix seconds
	metricRuleDecisions    = "quotamesh_rule_decisions_total"          // {rule, result=allowed|denied}, tokens
	metricRuleKeys         = "quotamesh_rule_keys"                     // {rule}: windows its keys hold
	metricRuleKeysRejected = "quotamesh_rule_keys_rejected_total"      // {rule}: new keys refused at its budget
)

// engineRejectReasons are the engine's reasons for refusing a sync frame
// (cluster, sender, member, replay, invalid), exported from the start.
var engineRejectReasons = []string{"cluster", "sender", "member", "replay", "invalid"}

// Rejection reasons the node adds to the engine's (cluster, sender, member,
// replay, invalid): frames that do not decode, or are not sync messages.
const (
	reasonTooLarge       = "too_large"
	reasonMalformed      = "malformed"
	reasonVersion        = "version"
	reasonUnknownType    = "unknown_type"
	reasonUnexpectedType = "unexpected_type"
)

var raftStates = []string{"follower", "candidate", "leader", "shutdown", "closed"}

type metrics struct {
	decisions       *prometheus.CounterVec
	keys            prometheus.Gauge
	keysRejected    prometheus.Counter
	peerUp          *prometheus.GaugeVec
	syncLag         *prometheus.GaugeVec
	syncBytes       *prometheus.CounterVec
	framesRejected  *prometheus.CounterVec
	fenced          prometheus.Gauge
	ready           prometheus.Gauge
	raftState       *prometheus.GaugeVec
	raftApplied     prometheus.Gauge
	limitRules      prometheus.Gauge
	leaseTokens     *prometheus.CounterVec
	tick            prometheus.Histogram
	clockCorrection prometheus.Gauge
	clockSkew       prometheus.Gauge
	clientRequests  *prometheus.CounterVec
	forwardRefused  prometheus.Counter
	buildInfo       *prometheus.GaugeVec
	certExpiry      *prometheus.GaugeVec
	// Per rule: label values are the table's patterns, deleted with their
	// rule, so the series are bounded by the table (limits.MaxRules).
	ruleDecisions    *prometheus.CounterVec
	ruleKeys         *prometheus.GaugeVec
	ruleKeysRejected *prometheus.CounterVec

	// decide and lease count client requests by code without a label
	// lookup per request.
	decide, lease [wire.NumCodes]prometheus.Counter

	collectors []prometheus.Collector
	reg        prometheus.Registerer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions:      newCounterVec(metricDecisions, "Tokens decided on this node, by result: allowed, denied, unlimited (no rule matched), rejected (MaxKeys reached). Derived each second from the windows, not counted on the request path.", "result"),
		keys:           newGauge(metricKeys, "Keys with a window on this node."),
		keysRejected:   newCounter(metricKeysRejected, "New keys refused because MaxKeys windows existed."),
		peerUp:         newGaugeVec(metricPeerUp, "1 while the connection to the member is up.", "peer"),
		syncLag:        newGaugeVec(metricSyncLag, "Seconds since the last sync frame accepted from the member.", "peer"),
		syncBytes:      newCounterVec(metricSyncBytes, "Sync stream bytes exchanged with the member, by direction.", "peer", "direction"),
		framesRejected: newCounterVec(metricFramesRejected, "Peer frames refused, by reason; a refused frame changes nothing.", "reason"),
		fenced:         newGauge(metricFenced, "1 while this node admits nothing new because it has not heard a majority for FenceAfter."),
		ready:          newGauge(metricReady, "1 while the node is ready: serving, not fenced, a Raft leader known, the table applied."),
		raftState:      newGaugeVec(metricRaftState, "1 for this node's current Raft state.", "state"),
		raftApplied:    newGauge(metricRaftApplied, "Log index of the last change applied to the limit table."),
		limitRules:     newGauge(metricLimitRules, "Rules in the limit table."),
		leaseTokens:    newCounterVec(metricLeaseTokens, "Lease tokens granted to and returned by SDKs.", "kind"),
		tick: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    metricTick,
			Help:    "Duration of one sync tick: mirror, membership, quotas, deltas.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 15), // 10 µs to 160 ms
		}),
		clockCorrection:  newGauge(metricClockCorrection, "What clock alignment adds to this node's clock to read node time."),
		clockSkew:        newGauge(metricClockSkew, "The clock offset the fault suite sets to play clock skew (0 unless the node runs with the fault layer)."),
		clientRequests:   newCounterVec(metricClientRequests, "Client requests answered, by operation and reply code.", "op", "code"),
		forwardRefused:   newCounter(metricForwardRefused, "Consensus requests forwarded to this node and refused: undecodable, or from a node that may not send them."),
		buildInfo:        newGaugeVec(metricBuildInfo, "1, with the build's version, VCS revision and Go version as labels.", "version", "revision", "go_version"),
		certExpiry:       newGaugeVec(metricCertExpiry, "When the certificate in use expires (NotAfter, Unix seconds): the node's own, and the CA it chains to. Renew before it and send SIGHUP.", "cert"),
		ruleDecisions:    newCounterVec(metricRuleDecisions, "Tokens decided on this node for the keys of each rule, by result: allowed, denied. Derived each second like quotamesh_decisions_total.", "rule", "result"),
		ruleKeys:         newGaugeVec(metricRuleKeys, "Keys of each rule with a window on this node.", "rule"),
		ruleKeysRejected: newCounterVec(metricRuleKeysRejected, "New keys of each rule refused because the rule's key budget (its reserve and the shared pool of max_keys) was taken.", "rule"),
		reg:              reg,
	}
	m.collectors = []prometheus.Collector{m.decisions, m.keys, m.keysRejected, m.peerUp, m.syncLag, m.syncBytes,
		m.framesRejected, m.fenced, m.ready, m.raftState, m.raftApplied, m.limitRules, m.leaseTokens, m.tick,
		m.clockCorrection, m.clockSkew, m.clientRequests, m.forwardRefused, m.buildInfo, m.certExpiry,
		m.ruleDecisions, m.ruleKeys, m.ruleKeysRejected}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, r := range m.collectors[:i] {
				reg.Unregister(r)
			}
			return nil, err
		}
	}
	// Every counter is exported from the start, at 0, so that alerts on its
	// growth work before the first event.
	for c := range wire.Code(wire.NumCodes) {
		m.decide[c] = m.clientRequests.WithLabelValues(wire.OpDecide.String(), c.String())
		m.lease[c] = m.clientRequests.WithLabelValues(wire.OpLease.String(), c.String())
		for op := wire.AdminLimitSet; op <= wire.MaxAdminOp; op++ {
			m.clientRequests.WithLabelValues(op.String(), c.String())
		}
	}
	for _, r := range append(slices.Clone(engineRejectReasons), reasonTooLarge, reasonMalformed, reasonVersion, reasonUnknownType, reasonUnexpectedType) {
		m.framesRejected.WithLabelValues(r)
	}
	version, revision := buildVersion()
	m.buildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
	for _, r := range []string{"allowed", "denied", "unlimited", "rejected"} {
		m.decisions.WithLabelValues(r)
	}
	for _, k := range []string{"granted", "returned"} {
		m.leaseTokens.WithLabelValues(k)
	}
	for _, s := range raftStates {
		m.raftState.WithLabelValues(s)
	}
	return m, nil
}

func newGauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
}

func newCounter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newGaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// unregister removes the node's collectors, so that a registry given in
// Config can take a new node after this one stopped.
func (m *metrics) unregister() {
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}

// forgetPeer deletes a departed member's label values.
func (m *metrics) forgetPeer(id string) {
	m.peerUp.DeleteLabelValues(id)
	m.syncLag.DeleteLabelValues(id)
	m.syncBytes.DeleteLabelValues(id, "in")
	m.syncBytes.DeleteLabelValues(id, "out")
}

// buildVersion is the main module's version ("devel" for a build from a
// work tree) and VCS revision ("" if unknown), from the build info.
func buildVersion() (version, revision string) {
	version = "devel"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version, ""
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		version = v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			revision = s.Value
		}
	}
	return version, revision
}

// forgetRule deletes a deleted rule's label values.
func (m *metrics) forgetRule(pattern string) {
	m.ruleDecisions.DeletePartialMatch(prometheus.Labels{"rule": pattern})
	m.ruleKeys.DeleteLabelValues(pattern)
	m.ruleKeysRejected.DeleteLabelValues(pattern)
}
