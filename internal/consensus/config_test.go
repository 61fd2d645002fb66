package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/consensus/consensustest"
)

func validConfig(t *testing.T) Config {
	t.Helper()
	net := consensustest.NewNetwork()
	layer, err := net.Listen("a:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = layer.Close() })
	return Config{
		NodeID:    "a",
		Address:   "a:1",
		DataDir:   t.TempDir(),
		Layer:     layer,
		Forwarder: net.Forwarder("a:1"),
		Bootstrap: []Server{{"a", "a:1"}, {"b", "b:1"}, {"c", "c:1"}},
	}
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string // the error must name the field and the bad value
	}{
		{"empty ID", func(c *Config) { c.NodeID = "" }, `NodeID "" is empty`},
		{"ID with space", func(c *Config) { c.NodeID = "a b" }, `NodeID "a b" has byte 0x20 at offset 1`},
		{"long ID", func(c *Config) { c.NodeID = strings.Repeat("x", 65) }, "is 65 bytes; at most 64"},
		{"empty address", func(c *Config) { c.Address = "" }, `Address "" is empty`},
		{"no DataDir", func(c *Config) { c.DataDir = "" }, "DataDir is empty"},
		{"no layer", func(c *Config) { c.Layer = nil }, "Layer is nil"},
		{"no forwarder", func(c *Config) { c.Forwarder = nil }, "Forwarder is nil"},
		{"even voters", func(c *Config) { c.MaxVoters = 4 }, "MaxVoters 4 must be odd"},
		{"too many voters", func(c *Config) { c.MaxVoters = 9 }, "MaxVoters 9 must be odd, from 1 to 7"},
		{"negative voters", func(c *Config) { c.MaxVoters = -1 }, "MaxVoters -1"},
		{"tiny heartbeat", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }, "HeartbeatTimeout 1ms is below 5ms"},
		{"negative commit", func(c *Config) { c.CommitTimeout = -time.Second }, "CommitTimeout -1s is below 5ms"},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = 100 * time.Millisecond }, "ElectionTimeout 100ms is below HeartbeatTimeout 300ms"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, "LeaderLeaseTimeout 1s is above HeartbeatTimeout 300ms"},
		{"commit not below heartbeat", func(c *Config) { c.CommitTimeout = 300 * time.Millisecond }, "CommitTimeout 300ms is not below HeartbeatTimeout 300ms"},
		{"snapshot interval", func(c *Config) { c.SnapshotInterval = time.Microsecond }, "SnapshotInterval 1µs is below 5ms"},
		{"duplicate bootstrap ID", func(c *Config) { c.Bootstrap[1].ID = "a" }, `Bootstrap[1].ID "a" appears twice`},
		{"duplicate bootstrap address", func(c *Config) { c.Bootstrap[2].Address = "b:1" }, `Bootstrap[2].Address "b:1" appears twice`},
		{"bootstrap address mismatch", func(c *Config) { c.Bootstrap[0].Address = "a:2" }, `Bootstrap[0] gives this node ("a") address "a:2" but Address is "a:1"`},
		{"bad bootstrap ID", func(c *Config) { c.Bootstrap[2].ID = "" }, `Bootstrap[2].ID "" is empty`},
	} {
		cfg := validConfig(t)
		tc.change(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v; want ErrConfig containing %q", tc.name, err, tc.want)
		}
		if _, oerr := Open(cfg); !errors.Is(oerr, ErrConfig) {
			t.Errorf("%s: Open = %v; want the Validate error", tc.name, oerr)
		}
	}

	// Every problem is reported, not just the first.
	err := Config{MaxVoters: 2}.Validate()
	for _, want := range []string{"NodeID", "Address", "DataDir", "Layer", "Forwarder", "MaxVoters 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of an empty config does not mention %s: %v", want, err)
		}
	}

	// Zero means default.
	d := Config{}.withDefaults()
	if d.MaxVoters != DefaultMaxVoters || d.HeartbeatTimeout != DefaultHeartbeatTimeout || d.SnapshotThreshold != DefaultSnapshotThreshold || d.DeadVoterAfter != DefaultDeadVoterAfter {
		t.Errorf("withDefaults() = %+v", d)
	}
	// Negative DeadVoterAfter disables replacement and is valid.
	cfg := validConfig(t)
	cfg.DeadVoterAfter = -1
	if err := cfg.Validate(); err != nil {
		t.Errorf("DeadVoterAfter -1: %v", err)
	}
}
