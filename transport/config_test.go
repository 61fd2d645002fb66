package transport

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quotamesh/quotamesh/internal/certs"
	"github.com/quotamesh/quotamesh/internal/wire"
)

func TestConfigValidate(t *testing.T) {
	ca := testCA(t)
	other := testCA(t)
	good := Config{
		NodeID:      "n1",
		ListenAddr:  "127.0.0.1:0",
		Certificate: nodeCert(t, ca, "n1"),
		CAs:         ca.Pool(),
		Handler:     newRecorder(),
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate of a good config: %v", err)
	}
	client, err := ca.IssueClient("c", certs.RoleDecide, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		mutate  func(c *Config)
		mention string // the message must name the bad value
	}{
		{"bad node ID", func(c *Config) { c.NodeID = "a b" }, `"a b"`},
		{"no address", func(c *Config) { c.ListenAddr = "" }, "ListenAddr"},
		{"no handler", func(c *Config) { c.Handler = nil }, "Handler"},
		{"no CAs", func(c *Config) { c.CAs = nil }, "CAs"},
		{"negative frame size", func(c *Config) { c.MaxFrameSize = -1 }, "-1"},
		{"huge frame size", func(c *Config) { c.MaxFrameSize = MaxFrameSizeLimit + 1 }, "67108865"},
		{"keep-alive not below idle", func(c *Config) { c.KeepAlive = 2 * time.Second }, "2s"},
		{"idle below default keep-alive", func(c *Config) { c.IdleTimeout = 100 * time.Millisecond }, "100ms"},
		{"negative idle", func(c *Config) { c.IdleTimeout = -time.Second }, "-1s"},
		{"negative handshake", func(c *Config) { c.HandshakeTimeout = -1 }, "HandshakeTimeout"},
		{"backoff inverted", func(c *Config) { c.DialBackoffMin = 3 * time.Second }, "3s"},
		{"negative streams", func(c *Config) { c.MaxIncomingStreams = -2 }, "-2"},
		{"no certificate", func(c *Config) { c.Certificate = tls.Certificate{} }, "no certificate"},
		{"certificate of another node", func(c *Config) { c.NodeID = "n2" }, `"n1"`},
		{"client certificate", func(c *Config) { c.Certificate = client.TLSCertificate() }, "client/c"},
		{"certificate from another CA", func(c *Config) { c.CAs = other.Pool() }, "unknown authority"},
	}
	for _, s := range steps {
		c := good
		s.mutate(&c)
		err := c.Validate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate = %v, want ErrInvalidConfig", s.name, err)
			continue
		}
		if !strings.Contains(err.Error(), s.mention) {
			t.Errorf("%s: message %q does not mention %q", s.name, err, s.mention)
		}
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", s.name, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	d := Config{}.withDefaults()
	if d.MaxFrameSize != 1<<20 || d.KeepAlive != 250*time.Millisecond || d.IdleTimeout != time.Second ||
		d.DialBackoffMin != 50*time.Millisecond || d.DialBackoffMax != 2*time.Second || d.HandshakeTimeout != 2*time.Second ||
		d.MaxIncomingStreams != 256 {
		t.Errorf("defaults = %+v", d)
	}
}

// TestFrameSizesFitTheFramer: the framer takes every MaxFrameSize a Config
// may set, and the default is a message frame's size.
func TestFrameSizesFitTheFramer(t *testing.T) {
	if MaxFrameSizeLimit != wire.FrameLimit || DefaultMaxFrameSize != wire.MaxFrame {
		t.Errorf("MaxFrameSizeLimit %d, DefaultMaxFrameSize %d; want the framer's %d and %d",
			MaxFrameSizeLimit, DefaultMaxFrameSize, wire.FrameLimit, wire.MaxFrame)
	}
}

func TestMetricsRegistration(t *testing.T) {
	ca := testCA(t)
	reg := prometheus.NewRegistry()
	a := startNode(t, ca, "a", func(c *Config) { c.Registerer = reg })
	b := startNode(t, ca, "b")
	mesh(t, a, b)
	waitStable(t, 5*time.Second, a, b)
	sendRetry(t, b, "a", []byte("hello"), time.Second)
	eventually(t, time.Second, "frame", func() bool { return len(a.h.framesFrom("b")) == 1 })

	// A second Transport on the same registry is refused with a clear error.
	cfg := a.cfg
	cfg.PacketConn, cfg.ListenAddr = nil, "127.0.0.1:0"
	if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("second Transport on one registry: %v, want ErrInvalidConfig", err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, f := range families {
		found[f.GetName()] = true
		if f.GetName() == metricPeerFrames {
			for _, m := range f.GetMetric() {
				if len(m.GetLabel()) != 2 {
					t.Errorf("%s has labels %v", metricPeerFrames, m.GetLabel())
				}
			}
		}
	}
	for _, name := range []string{metricPeerBytes, metricPeerFrames, metricPeerUp, metricDials} {
		if !found[name] {
			t.Errorf("metric %s not gathered", name)
		}
	}
	// Close unregisters: a new Transport can use the registry.
	a.close()
	cfg.PacketConn = nil
	t2, err := New(cfg)
	if err != nil {
		t.Fatalf("New after Close on the same registry: %v", err)
	}
	_ = t2.Close()
}
