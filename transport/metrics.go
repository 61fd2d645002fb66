package transport

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. The peer label only ever holds IDs of nodes that passed the
// handshake (cluster members), and is deleted when a peer goes away, so
// label sets stay bounded.
const (
	metricPeerBytes      = "quotamesh_transport_peer_bytes_total"          // {peer, direction=in|out}: frame bytes incl. length prefix
	metricPeerFrames     = "quotamesh_transport_peer_frames_total"         // {peer, direction}
	metricFramesRejected = "quotamesh_transport_frames_rejected_total"     // {reason=too_large|malformed|protocol}: frames refused from peers
	metricSendDropped    = "quotamesh_transport_send_dropped_total"        // {reason=busy|not_connected|too_large}: Send calls that returned an error
	metricPeerUp         = "quotamesh_transport_peer_up"                   // {peer}: 1 while connected
	metricDials          = "quotamesh_transport_dial_attempts_total"       // {peer, result=ok|error}
	metricRefused        = "quotamesh_transport_handshakes_refused_total"  // {direction=inbound|outbound, reason}
	metricClients        = "quotamesh_transport_client_connections"        // open client connections
	metricAttempts       = "quotamesh_transport_connection_attempts_total" // incoming connection attempts, before the handshake
)

// Frame rejection reasons.
const (
	rejectTooLarge  = "too_large"
	rejectMalformed = "malformed"
	rejectProtocol  = "protocol"
)

type metrics struct {
	bytes       *prometheus.CounterVec
	frames      *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	sendDropped *prometheus.CounterVec
	peerUp      *prometheus.GaugeVec
	dials       *prometheus.CounterVec
	refused     *prometheus.CounterVec
	clients     prometheus.Gauge
	attempts    prometheus.Counter

	// Send's error paths count here too, without a map lookup.
	dropBusy, dropNotConnected, dropTooLarge prometheus.Counter

	// refusals mirrors refused for tests and logs, by reason.
	refusals map[string]*atomic.Uint64

	// unregister removes the collectors from the Registerer (nil if none).
	unregister func()
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPeerBytes, Help: "Frame bytes (with length prefixes) exchanged with each peer on sync streams.",
		}, []string{"peer", "direction"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricPeerFrames, Help: "Frames exchanged with each peer on sync streams.",
		}, []string{"peer", "direction"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricFramesRejected, Help: "Frames or streams refused from peers, by reason; the connection is closed.",
		}, []string{"reason"}),
		sendDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricSendDropped, Help: "Frames Send refused, by reason.",
		}, []string{"reason"}),
		peerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricPeerUp, Help: "1 while a connection to the peer is up.",
		}, []string{"peer"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricDials, Help: "Connection attempts to each peer, by result.",
		}, []string{"peer", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricRefused, Help: "Handshakes refused by this node's certificate checks, by direction and reason.",
		}, []string{"direction", "reason"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricClients, Help: "Open client connections.",
		}),
		attempts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricAttempts, Help: "Incoming connection attempts (peers and clients), counted before the handshake rate limit and the TLS handshake.",
		}),
		refusals: map[string]*atomic.Uint64{},
	}
	for _, r := range refusalReasons {
		m.refusals[r] = new(atomic.Uint64)
	}
	m.dropBusy = m.sendDropped.WithLabelValues("busy")
	m.dropNotConnected = m.sendDropped.WithLabelValues("not_connected")
	m.dropTooLarge = m.sendDropped.WithLabelValues("too_large")
	// Every counter is exported from the start, at 0, so that alerts on its
	// growth work before the first event.
	for _, dir := range []string{"inbound", "outbound"} {
		for _, r := range refusalReasons {
			m.refused.WithLabelValues(dir, r)
		}
	}
	for _, r := range []string{rejectTooLarge, rejectMalformed, rejectProtocol} {
		m.rejected.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var registered []prometheus.Collector
	for _, c := range []prometheus.Collector{m.bytes, m.frames, m.rejected, m.sendDropped, m.peerUp, m.dials, m.refused, m.clients, m.attempts} {
		if err := reg.Register(c); err != nil {
			for _, r := range registered {
				reg.Unregister(r)
			}
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				return nil, fmt.Errorf("%w: Registerer already has transport metrics (one Transport per registry): %w", ErrInvalidConfig, err)
			}
			return nil, fmt.Errorf("quotamesh/transport: register metrics: %w", err)
		}
		registered = append(registered, c)
	}
	m.unregister = func() {
		for _, r := range registered {
			reg.Unregister(r)
		}
	}
	return m, nil
}

// peerMetrics are one peer's pre-resolved counters, so the reader and writer
// do no label lookups.
type peerMetrics struct {
	bytesIn, bytesOut, framesIn, framesOut prometheus.Counter
	up                                     prometheus.Gauge
	dialOK, dialErr                        prometheus.Counter
}

func (m *metrics) forPeer(id string) peerMetrics {
	return peerMetrics{
		bytesIn:   m.bytes.WithLabelValues(id, "in"),
		bytesOut:  m.bytes.WithLabelValues(id, "out"),
		framesIn:  m.frames.WithLabelValues(id, "in"),
		framesOut: m.frames.WithLabelValues(id, "out"),
		up:        m.peerUp.WithLabelValues(id),
		dialOK:    m.dials.WithLabelValues(id, "ok"),
		dialErr:   m.dials.WithLabelValues(id, "error"),
	}
}

// forgetPeer deletes a departed peer's series.
func (m *metrics) forgetPeer(id string) {
	m.bytes.DeletePartialMatch(prometheus.Labels{"peer": id})
	m.frames.DeletePartialMatch(prometheus.Labels{"peer": id})
	m.peerUp.DeletePartialMatch(prometheus.Labels{"peer": id})
	m.dials.DeletePartialMatch(prometheus.Labels{"peer": id})
}

func (m *metrics) refusedCount(reason string) uint64 {
	if c := m.refusals[reason]; c != nil {
		return c.Load()
	}
	return 0
}
