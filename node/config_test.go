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
		{"too many voters", func(c *Config) {
			c.MaxVoters = 1
			c.Bootstrap = []Peer{{ID: "a", Addr: "h:1"}, {ID: "b", Addr: "h:2"}}
		}, []string{"Bootstrap lists 2 voters, more than MaxVoters 1"}},
		{"bad join", func(c *Config) { c.Join = []string{"seed"} }, []string{`Join[0] "seed"`}},
		{"no tls", func(c *Config) { c.TLS.Certificate = nil }, []string{"TLS: set CertDir"}},
		{"both tls", func(c *Config) { c.TLS.CertDir = "/certs" }, []string{`CertDir "/certs"`}},
		{"bad admin client", func(c *Config) { c.TLS.AdminClients = []string{"ok", "no way"} }, []string{`AdminClients[1] "no way"`}},
		{"negative keys", func(c *Config) { c.MaxKeys = -5 }, []string{"MaxKeys -5"}},
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
	if d.Listen != ":7946" || d.AdminListen != "127.0.0.1:9946" || d.ClusterID != "quotamesh" || d.MaxVoters != 5 ||
		d.SyncInterval != 20*time.Millisecond || d.MaxKeys != window.DefaultMaxKeys || d.WhenFull != window.PolicyDeny ||
		d.UnknownKeys != window.PolicyAllow || d.LogLevel != "info" || len(d.TLS.AdminClients) != 1 {
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
	// Reload: the reloadable subset applies; other fields are refused
	// whole.
	next := cfg
	next.LogLevel = "debug"
	next.SyncInterval = 50 * time.Millisecond
	if err := m.Reload(next); !errors.Is(err, ErrNotReloadable) || !strings.Contains(err.Error(), "SyncInterval") {
		t.Errorf("Reload of SyncInterval: %v", err)
	}
	if m.level.get().String() != "info" {
		t.Errorf("a refused Reload changed the log level to %v", m.level.get())
	}
	next.SyncInterval = 0
	if err := m.Reload(next); err != nil {
		t.Errorf("Reload of the log level: %v", err)
	}
	if m.level.get().String() != "debug" {
		t.Errorf("log level %v after Reload", m.level.get())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}
