package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quotamesh/quotamesh/window"
)

// validConfig is a Config that validates, to break one field at a time.
func validConfig(t *testing.T) Config {
	t.Helper()
	ca := newTestCA(t)
	b, err := ca.IssueNode("n1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := b.TLSCertificate()
	cfg := DefaultConfig()
	cfg.ID = "n1"
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	cfg.AdminListen = ""
	cfg.TLS.Certificate, cfg.TLS.CAs = &cert, ca.Pool()
	return cfg
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		names []string // what the message must name
	}{
		{"empty ID", func(c *Config) { c.ID = "" }, []string{`ID ""`}},
		{"bad ID", func(c *Config) { c.ID = "a b" }, []string{`ID "a b"`}},
		{"bad cluster", func(c *Config) { c.ClusterID = "x/y" }, []string{`ClusterID "x/y"`}},
		{"bad listen", func(c *Config) { c.Listen = "nope" }, []string{`Listen "nope"`}},
		{"no advertise", func(c *Config) { c.Listen = ":7946" }, []string{"Advertise is empty", `":7946"`}},
		{"unspecified advertise", func(c *Config) { c.Advertise = "0.0.0.0:1" }, []string{`Advertise "0.0.0.0:1"`}},
		{"bad admin", func(c *Config) { c.AdminListen = "localhost" }, []string{`AdminListen "localhost"`}},
		{"no data dir", func(c *Config) { c.DataDir = "" }, []string{"DataDir is empty"}},
		{"bad bootstrap", func(c *Config) { c.Bootstrap = []Peer{{ID: "n1", Addr: "x"}, {ID: "n1", Addr: "h:1"}} }, []string{`Bootstrap[0].Addr "x"`, `Bootstrap[1].ID "n1" is listed twice`}},
		{"bad join", func(c *Config) { c.Join = []string{"seed"} }, []string{`Join[0] "seed"`}},
		{"no tls", func(c *Config) { c.TLS.Certificate = nil }, []string{"TLS: set CertDir"}},
		{"both tls", func(c *Config) { c.TLS.CertDir = "/certs" }, []string{`CertDir "/certs"`}},
		{"negative client conns", func(c *Config) { c.Clients.MaxClientConns = -1 }, []string{"Clients.MaxClientConns -1"}},
		{"port out of range", func(c *Config) { c.Listen = "127.0.0.1:99999" }, []string{`Listen "127.0.0.1:99999"`, "65535"}},
		{"join port 0", func(c *Config) { c.Join = []string{"h:0"} }, []string{`Join[0] "h:0"`}},
		{"negative sync interval", func(c *Config) { c.SyncInterval = -10 * time.Millisecond }, []string{"SyncInterval -10ms is negative"}},
		{"negative lease TTL", func(c *Config) { c.LeaseTTL = -time.Second }, []string{"LeaseTTL -1s is negative"}},
		{"negative keys", func(c *Config) { c.MaxKeys = -5 }, []string{"MaxKeys -5"}},
		{"client wait too short", func(c *Config) { c.ClientMaxWait = time.Microsecond }, []string{"ClientMaxWait 1µs"}},
		{"client wait too long", func(c *Config) { c.ClientMaxWait = time.Hour }, []string{"ClientMaxWait 1h0m0s"}},
		{"bad policy", func(c *Config) { c.WhenFull = 9 }, []string{"WhenFull 9"}},
		{"fence below dead", func(c *Config) { c.DeadAfter, c.FenceAfter = 2*time.Second, time.Second }, []string{"fence after 1s is below dead after 2s"}},
		{"reclaim too soon", func(c *Config) { c.ReclaimAfter = 3500 * time.Millisecond }, []string{"reclaim after 3.5s"}},
		{"fast sync", func(c *Config) { c.SyncInterval = time.Microsecond }, []string{"sync interval 1µs"}},
		{"lease fraction", func(c *Config) { c.MaxLeaseFraction = 2 }, []string{"max lease fraction 2"}},
		{"even voters", func(c *Config) { c.MaxVoters = 4 }, []string{"MaxVoters 4"}},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, []string{`LogLevel "loud"`}},
		{"gatherer alone", func(c *Config) { c.Gatherer = prometheus.NewRegistry() }, []string{"Gatherer is set without a Registerer"}},
		{"registerer not gatherer", func(c *Config) { c.Registerer = prometheus.WrapRegistererWithPrefix("x_", prometheus.NewRegistry()) }, []string{"is not a Gatherer"}},
	} {
		cfg := validConfig(t)
		tc.mod(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate() = %v; want ErrInvalidConfig", tc.name, err)
			continue
		}
		for _, s := range tc.names {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %v\n\tdoes not name %s", tc.name, err, s)
			}
		}
	}
	// Every problem is reported at once.
	cfg := validConfig(t)
	cfg.ID, cfg.DataDir, cfg.MaxVoters = "", "", 2
	if err := cfg.Validate(); err == nil || strings.Count(err.Error(), ";") < 2 {
		t.Errorf("three bad fields: %v; want all three named", err)
	}
	// Start refuses a bad config before opening anything.
	cfg = validConfig(t)
	cfg.ID = ""
	if _, err := Start(context.Background(), cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Start with a bad config: %v", err)
	}
}

func TestDefaultConfig(t *testing.T) {
	d := DefaultConfig()
	if d.Listen != "127.0.0.1:7946" || d.AdminListen != "127.0.0.1:9946" || d.ClusterID != "quotamesh" || d.MaxVoters != 5 ||
		d.SyncInterval != 20*time.Millisecond || d.MaxKeys != window.DefaultMaxKeys || d.WhenFull != window.PolicyDeny ||
		d.UnknownKeys != window.PolicyAllow || d.LogLevel != "info" || d.Clients.AllowAnonymous {
		t.Errorf("DefaultConfig() = %+v", d)
	}
	// Zero fields read as the defaults.
	var z Config
	if got := z.withDefaults(); got.FenceAfter != d.FenceAfter || got.LeaseTTL != d.LeaseTTL || got.AdminListen != "" {
		t.Errorf("zero Config with defaults: %+v", got)
	}
}

// TestStartFailsCleanly checks that a Start that fails half-way (here: an
// admin port in use) leaves nothing behind (goleak) and can be retried.
func TestStartFailsCleanly(t *testing.T) {
	cfg := validConfig(t)
	busy := validConfig(t)
	busy.AdminListen = "127.0.0.1:0"
	n, err := Start(context.Background(), busy)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	cfg.AdminListen = n.AdminAddr()
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Fatalf("Start on a busy admin port: %v", err)
	}
	cfg.AdminListen = ""
	m, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start after a failed Start: %v", err)
	}
	// Reload: the reloadable fields apply even beside fields that need a
	// restart, which are named.
	next := cfg
	next.LogLevel = "debug"
	next.Clients.MaxClientConns = 7
	next.SyncInterval = 50 * time.Millisecond
	next.MaxKeys = 10
	err = m.Reload(next)
	if !errors.Is(err, ErrNotReloadable) || !strings.Contains(err.Error(), "SyncInterval, MaxKeys") {
		t.Errorf("Reload of SyncInterval and MaxKeys: %v; want both named", err)
	}
	if m.level.get().String() != "debug" || m.tr.ClientPolicy().MaxClientConns != 7 {
		t.Errorf("Reload beside fields that need a restart: log level %v, MaxClientConns %d; want debug and 7", m.level.get(), m.tr.ClientPolicy().MaxClientConns)
	}
	next.SyncInterval, next.MaxKeys = 0, 0
	if err := m.Reload(next); err != nil {
		t.Errorf("Reload of reloadable fields only: %v", err)
	}
	// Certificates that do not fit are refused; the old ones stay.
	other := newTestCA(t)
	b, err := other.IssueNode("n2", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrong := b.TLSCertificate()
	before := m.tr.Certificate()
	next.TLS.Certificate, next.TLS.CAs = &wrong, other.Pool()
	if err := m.Reload(next); !errors.Is(err, ErrCertificates) {
		t.Errorf("Reload with another node's certificate: %v, want ErrCertificates", err)
	}
	if m.tr.Certificate() != before {
		t.Error("a refused certificate replaced the one in use")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}
