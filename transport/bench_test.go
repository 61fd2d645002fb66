package transport

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/rs/zerolog"
)

// The benchmarks below are the measurement harness for the transport's
// numbers (docs/benchmarks.md). They run real QUIC on 127.0.0.1; on a shared
// 2-core machine, run them one at a time with a small -benchtime, e.g.
//
//	go test -run '^$' -bench 'FrameRoundTrip' -benchtime 20000x ./transport/
//	go test -run '^$' -bench 'Handshake' -benchtime 200x ./transport/
//	go test -run '^$' -bench 'PeerDownDetection' -benchtime 5x ./transport/

// reportPercentiles adds p50, p99 and max of ds (in µs) to the benchmark.
func reportPercentiles(b *testing.B, ds []time.Duration, unit string) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	scale := float64(time.Microsecond)
	if unit == "ms" {
		scale = float64(time.Millisecond)
	}
	b.ReportMetric(float64(at(0.50))/scale, "p50-"+unit)
	b.ReportMetric(float64(at(0.99))/scale, "p99-"+unit)
	b.ReportMetric(float64(ds[len(ds)-1])/scale, "max-"+unit)
}

// echoHandler echoes frames back (on the responder) or signals them (on the
// requester), with no recording on the hot path.
type echoHandler struct {
	t      func() *Transport
	echo   bool
	got    chan struct{}
	up     chan string
	down   chan string
	client func(*ClientConn)
}

func newEchoHandler(echo bool) *echoHandler {
	return &echoHandler{echo: echo, got: make(chan struct{}, 1), up: make(chan string, 16), down: make(chan string, 16)}
}

func (h *echoHandler) PeerFrame(peer string, body []byte) {
	if h.echo {
		for h.t().Send(peer, body) != nil {
			time.Sleep(time.Microsecond)
		}
		return
	}
	h.got <- struct{}{}
}

// PeerUp and PeerDown never block: a Handler that blocks holds up Close.
func (h *echoHandler) PeerUp(peer string) {
	select {
	case h.up <- peer:
	default:
	}
}
func (h *echoHandler) PeerDown(peer string, err error) {
	select {
	case h.down <- peer:
	default:
	}
}
func (h *echoHandler) ServeClient(c *ClientConn) {
	if h.client != nil {
		h.client(c)
		return
	}
	<-c.Done()
}

func benchNode(b *testing.B, id string, h Handler, opts ...func(*Config)) *node {
	b.Helper()
	opts = append([]func(*Config){func(c *Config) { c.Handler = h; c.Logger = zerolog.Nop() }}, opts...)
	return startNode(b, benchCA(b), id, opts...)
}

var (
	benchCAOnce sync.Once
	benchCAVal  *certs.CA
)

func benchCA(b *testing.B) *certs.CA {
	benchCAOnce.Do(func() { benchCAVal = testCA(b) })
	return benchCAVal
}

// BenchmarkFrameRoundTrip: a frame from a to b and b's echo back, on an
// established connection; one op is one round trip. "udp" runs on plain UDP
// sockets (what a node uses, with quic-go's GSO and batched reads); "faultnet"
// on the test wrapper with no faults set, which quic-go cannot batch.
func BenchmarkFrameRoundTrip(b *testing.B) {
	for _, sock := range []string{"udp", "faultnet"} {
		for _, size := range []int{64, 4096} {
			b.Run(sock+"/"+byteSize(size), func(b *testing.B) {
				var opts []func(*Config)
				if sock == "udp" {
					opts = append(opts, func(c *Config) { c.PacketConn, c.ListenAddr = nil, "127.0.0.1:0" })
				}
				ha, hb := newEchoHandler(false), newEchoHandler(true)
				a := benchNode(b, "a", ha, opts...)
				bn := benchNode(b, "b", hb, opts...)
				hb.t = func() *Transport { return bn.t }
				mesh(b, a, bn)
				waitStable(b, 5*time.Second, a, bn)
				body := make([]byte, size)
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for b.Loop() {
					start := time.Now()
					for {
						err := a.t.Send("b", body)
						if err == nil {
							break
						}
						if !errors.Is(err, ErrBusy) {
							b.Fatal(err)
						}
					}
					<-ha.got
					lat = append(lat, time.Since(start))
				}
				b.StopTimer()
				reportPercentiles(b, lat, "µs")
			})
		}
	}
}

// BenchmarkHandshake measures connection set-up on loopback, with mutual
// TLS: "client" is DialClient with a client certificate until it returns;
// "peer" is SetPeers until PeerUp (the handshake plus the exchange of sync
// streams that makes a connection up).
func BenchmarkHandshake(b *testing.B) {
	b.Run("client", func(b *testing.B) {
		// Every handshake comes from this process's address: lift the
		// per-source rate limit, which would refuse them past its burst.
		srv := benchNode(b, "a", newEchoHandler(false), func(c *Config) {
			c.Clients.HandshakeRate, c.Clients.HandshakeBurst = 1e9, 1<<20
		})
		cb, err := benchCA(b).IssueClient("bench", certs.RoleDecide, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		cert := cb.TLSCertificate()
		// A generous handshake timeout: on a loaded machine a handshake can
		// stall on retransmission timers, which the p99 then shows.
		cfg := ClientConfig{Certificate: &cert, CAs: benchCA(b).Pool(), NodeID: "a", HandshakeTimeout: 10 * time.Second}
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			cc, err := DialClient(context.Background(), srv.addr(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			_ = cc.Close()
		}
		reportPercentiles(b, lat, "µs")
	})
	b.Run("peer", func(b *testing.B) {
		ha := newEchoHandler(false)
		a := benchNode(b, "a", ha)
		bn := benchNode(b, "b", newEchoHandler(false))
		ha.up, ha.down = make(chan string, 1), make(chan string, 1)
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			if err := a.t.SetPeers(map[string]string{"b": bn.addr()}); err != nil {
				b.Fatal(err)
			}
			<-ha.up
			lat = append(lat, time.Since(start))
			_ = a.t.SetPeers(nil)
			<-ha.down
		}
		reportPercentiles(b, lat, "µs")
	})
}

// BenchmarkPeerDownDetection measures the time from a peer going silent
// (every datagram to and from it dropped) or closing to PeerDown on the
// other side. "silent-idle" has no traffic but keep-alives; "silent-20ms"
// has a sync frame each way every 20 ms, as a node sends.
// maxDownSamples caps BenchmarkPeerDownDetection's samples per mode,
// whatever b.N is.
const maxDownSamples = 20

func BenchmarkPeerDownDetection(b *testing.B) {
	for _, mode := range []string{"closed", "silent-idle", "silent-20ms"} {
		b.Run(mode, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				if len(lat) >= maxDownSamples {
					continue // each sample takes about a second
				}
				ha, hb := newEchoHandler(false), newEchoHandler(false)
				ha.got, hb.got = make(chan struct{}, 1<<16), make(chan struct{}, 1<<16)
				a, bn := benchNode(b, "a", ha), benchNode(b, "b", hb)
				mesh(b, a, bn)
				waitStable(b, 5*time.Second, a, bn)
				stop := make(chan struct{})
				var wg sync.WaitGroup
				if mode == "silent-20ms" {
					for _, pair := range [][2]*node{{a, bn}, {bn, a}} {
						wg.Go(func() {
							tick := time.NewTicker(20 * time.Millisecond)
							defer tick.Stop()
							for {
								select {
								case <-stop:
									return
								case <-tick.C:
									_ = pair[0].t.Send(pair[1].id, make([]byte, 100))
								}
							}
						})
					}
					time.Sleep(200 * time.Millisecond)
				}
				start := time.Now()
				if mode == "closed" {
					bn.close()
				} else {
					bn.fn.Block(a.t.Addr())
				}
				<-ha.down
				lat = append(lat, time.Since(start))
				close(stop)
				wg.Wait()
				a.close()
				bn.close()
			}
			unit := "ms"
			if mode == "closed" {
				unit = "µs"
			}
			reportPercentiles(b, lat, unit)
		})
	}
}

func byteSize(n int) string {
	if n >= 1024 {
		return strconv.Itoa(n/1024) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
