package sim

import (
	"time"

	"github.com/spf13/pflag"
)

// RegisterFlags binds c's simulation settings to fs as the sim command's
// flags (--clients and the client link, --duration, --warmup, --sync, the
// links, clock skew, --seed, the sync overlay, --encode), with their
// defaults. The workload's flags are workload.Flags'.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.IntVar(&c.Clients, "clients", 0, "SDK clients beside each node, deciding its requests (default 0: the nodes decide them, as embedded nodes)")
	fs.DurationVar(&c.Client.RTT, "client-rtt", DefaultClientRTT, "with --clients: round-trip time of a client's link to a node")
	fs.DurationVar(&c.Client.Jitter, "client-jitter", 0, "with --clients: extra random delay per message, uniform in [0, jitter)")
	fs.Float64Var(&c.Client.Loss, "client-loss", 0, "with --clients: probability that a message needs a retransmission")
	fs.BoolVar(&c.Client.Strict, "strict", false, "with --clients: one round trip per decision instead of leases")
	fs.BoolVar(&c.Client.Nearest, "nearest", false, "with --clients: every client sends every key to its own node, not the key's home")
	fs.DurationVar(&c.Client.Lease.TTL, "lease-ttl", 0, "with --clients: the SDK's lease TTL (default 50ms)")
	fs.DurationVar(&c.Client.Lease.Horizon, "lease-horizon", 0, "with --clients: a lease holds the calls this long brings at the key's rate (default 10ms; the TTL when shorter)")
	fs.StringVar((*string)(&c.Route), "route", string(RouteThin), "without --clients, where a node decides a request: local (itself, as an embedded node's AllowN), home (the key's home node) or thin (the home for a key whose limit and demand are thin over the nodes, itself for any other: the decision APIs' default)")
	fs.DurationVar(&c.Duration, "duration", 60*time.Second, "simulated length of the load")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "simulated time the nodes sync before the load starts")
	fs.DurationVar(&c.Sync, "sync", 20*time.Millisecond, "sync interval")
	fs.DurationVar(&c.RTT, "rtt", 2*time.Millisecond, "round-trip time of every link")
	fs.DurationVar(&c.Jitter, "jitter", 0, "extra random delay per frame, uniform in [0, jitter)")
	fs.Float64Var(&c.Loss, "loss", 0, "probability that a frame needs a retransmission (QUIC: delay, not loss)")
	fs.DurationVar(&c.RTO, "rto", 0, "delay one loss adds, doubling for each further loss of the same frame (default 3×rtt+1ms; about 30ms for quic-go on one machine)")
	fs.DurationVar(&c.FirstFrame, "first-frame", 0, "delay of a new stream's first sync frame after its hello")
	fs.DurationVar(&c.Skew, "skew", 0, "clock offsets spread evenly over [-skew, +skew]")
	fs.Uint64Var(&c.Seed, "seed", 1, "random seed")
	fs.IntVar(&c.Engine.FullMeshUpTo, "full-mesh-up-to", 0, "largest cluster that syncs as a full mesh; larger ones use the overlay (0: the default, 12; negative: always the overlay)")
	fs.IntVar(&c.Engine.SyncHops, "sync-hops", 0, "hops of the sync overlay (0: the default, 3)")
	fs.DurationVar(&c.Engine.Heartbeat, "heartbeat", 0, "how often a peer with nothing new still gets a frame (0: the default, 100ms)")
	fs.BoolVar(&c.Encode, "encode", false, "send every frame through the wire codec and count bytes")
}
