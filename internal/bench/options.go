package bench

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/quotamesh/quotamesh/client"
	"github.com/quotamesh/quotamesh/internal/localcluster"
	"github.com/quotamesh/quotamesh/internal/workload"
)

// DefaultTick is Options.Tick's default: the generator sleeps at least
// this long between two wakes. At 100k requests/s a wake hands over about
// two arrivals per node, and the generator takes a few percent of a core.
const DefaultTick = 20 * time.Microsecond

// Workers per node by default. A lease decision rarely waits. With a rate
// (a latency run) the generator makes the calls itself (0 workers), one
// after the other, as a service's request goroutine would: handing each to
// another goroutine adds a wake-up per hand-off that no service pays (at
// 100k/s on 2 cores it doubled P99 here). Without a rate (an accuracy run)
// each node has a pool: a call that waits for a lease then holds up only
// its own worker, as in a service with many request goroutines, where the
// single generator would hold up every node's requests and let the other
// SDKs' leases age unused (uniform on 3 nodes, 30 s: 14 % under the ideal
// with 0 workers, 3.8 % with 8). A strict decision waits a round trip, so
// it takes many in flight, and so do many keys, most of them cold (a
// round trip per call in the default mode too): 200 keys at 2× 10/s on 3
// real processes, 15 s, came within 1 % or 2 requests of their ideal for
// 93 % of the keys with 8 workers handed batches, 98.5 % with 64 workers
// taking one call each (load average 11).
const (
	LeaseWorkers     = 8
	LeaseRateWorkers = 0
	StrictWorkers    = 64
)

// FirstIP is the last byte of the first local node's loopback address:
// node i (from 0) listens on 127.0.0.(FirstIP+i), and so does the TCP
// baseline's server i.
const FirstIP = 10

// MaxLocalNodes is how many nodes fit on 127.0.0.10 to 127.0.0.254.
const MaxLocalNodes = 255 - FirstIP

// Options is everything `quotamesh bench` can be told; the field comments
// are in the command's flags.
type Options struct {
	// Binary is the quotamesh program that --local-cluster and the TCP
	// baseline start as child processes.
	Binary       string
	LocalCluster int
	Addrs        []string
	Certs        string
	ClientName   string
	ServeFlags   []string
	LogDir       string

	// Workload is the offered load's flags (--pattern, --keys, --key,
	// --limit, --rate, ...), shared with `quotamesh sim`.
	Workload workload.Flags
	Duration time.Duration
	Warmup   time.Duration
	Seed     uint64

	Strict       bool
	Nearest      bool
	Workers      int
	MaxInFlight  int
	Prime        bool
	Tick         time.Duration
	TCPBaseline  bool
	LeaseTTL     time.Duration
	ReqTimeout   time.Duration
	FindMax      bool
	P99Target    time.Duration
	FindMaxStep  float64
	FindMaxSteps int

	ReadyTimeout time.Duration
	JSON         bool
}

// DefaultOptions are the flags' defaults.
func DefaultOptions() Options {
	return Options{
		ClientName: localcluster.AdminClient, Workload: workload.DefaultFlags("bench"),
		Duration: 60 * time.Second, Warmup: time.Second, Seed: 1,
		Workers: LeaseWorkers, Prime: true, LeaseTTL: client.DefaultLeaseTTL, ReqTimeout: client.DefaultRequestTimeout, P99Target: 200 * time.Microsecond,
		FindMaxStep: 1.25, FindMaxSteps: 10, ReadyTimeout: 60 * time.Second, Tick: DefaultTick,
	}
}

// Plan is a validated bench: the options and their parsed forms.
type Plan struct {
	Options
	work workload.Spec
}

// Validate checks the options and parses them; errors name the flag and
// the bad value.
func (o Options) Validate() (Plan, error) {
	r := Plan{Options: o}
	var err error
	switch {
	case o.LocalCluster == 0 && len(o.Addrs) == 0:
		return r, fmt.Errorf("give --local-cluster N to start N nodes, or --addrs to drive a running cluster")
	case o.LocalCluster != 0 && len(o.Addrs) != 0:
		return r, fmt.Errorf("--local-cluster %d and --addrs %s: give one of them, not both", o.LocalCluster, strings.Join(o.Addrs, ","))
	case o.LocalCluster < 0 || o.LocalCluster > MaxLocalNodes:
		return r, fmt.Errorf("--local-cluster %d: want 1 to %d nodes", o.LocalCluster, MaxLocalNodes)
	case len(o.Addrs) != 0 && o.Certs == "":
		return r, fmt.Errorf("--addrs needs --certs, the cluster's certificates directory (ca.crt, clients/%s.crt and .key)", o.ClientName)
	case o.LocalCluster != 0 && o.Certs != "":
		return r, fmt.Errorf("--certs %q: only with --addrs; --local-cluster makes its own certificates", o.Certs)
	case o.LocalCluster == 0 && o.LogDir != "":
		return r, fmt.Errorf("--log-dir %q: only with --local-cluster", o.LogDir)
	case o.LocalCluster == 0 && len(o.ServeFlags) != 0:
		return r, fmt.Errorf("--serve-flag %q: only with --local-cluster", o.ServeFlags)
	}
	for _, a := range o.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return r, fmt.Errorf("--addrs: %q: want host:port: %v", a, err)
		}
	}
	switch {
	case o.Duration <= 0 || o.Duration > 24*time.Hour:
		return r, fmt.Errorf("--duration %v: want more than 0 and at most 24h", o.Duration)
	case o.Warmup < 0:
		return r, fmt.Errorf("--warmup %v: want 0 or more", o.Warmup)
	case o.Workers < 0 || o.Workers > 100_000:
		return r, fmt.Errorf("--workers %d: want 0 to 100000 per node", o.Workers)
	case o.MaxInFlight < 0 || o.MaxInFlight > 1<<20:
		return r, fmt.Errorf("--max-in-flight %d: want 0 (the SDK's default, at least twice --workers) to %d", o.MaxInFlight, 1<<20)
	case o.LeaseTTL < time.Millisecond || o.LeaseTTL > 10*time.Second:
		return r, fmt.Errorf("--lease-ttl %v: want 1ms to 10s", o.LeaseTTL)
	case o.TCPBaseline && !o.Strict:
		return r, fmt.Errorf("--tcp-baseline: only with --strict (the baseline is a round trip per decision)")
	case o.TCPBaseline && o.FindMax:
		return r, fmt.Errorf("--tcp-baseline: not with --find-max")
	case o.Tick < time.Microsecond || o.Tick > 10*time.Millisecond:
		return r, fmt.Errorf("--tick %v: want 1µs to 10ms", o.Tick)
	case o.ReqTimeout <= 0:
		return r, fmt.Errorf("--request-timeout %v: want a positive duration", o.ReqTimeout)
	case o.ReadyTimeout <= 0:
		return r, fmt.Errorf("--ready-timeout %v: want a positive duration", o.ReadyTimeout)
	case o.FindMax && o.Workload.Rate == 0:
		return r, fmt.Errorf("--find-max needs --rate, the first rate to try")
	case o.FindMax && o.P99Target <= 0:
		return r, fmt.Errorf("--p99-target %v: want a positive duration", o.P99Target)
	case o.FindMax && !(o.FindMaxStep > 1):
		return r, fmt.Errorf("--find-max-step %v: want a factor above 1", o.FindMaxStep)
	case o.FindMax && (o.FindMaxSteps < 1 || o.FindMaxSteps > 100):
		return r, fmt.Errorf("--find-max-steps %d: want 1 to 100", o.FindMaxSteps)
	}
	if r.work, err = o.Workload.Spec(max(r.nodes(), 1), o.Duration, o.Seed); err != nil {
		return r, err
	}
	return r, nil
}

// loadAt is the offered load at rate requests per second in total, or as
// the flags say when rate is 0.
func (r Plan) loadAt(rate float64) workload.Spec {
	s := r.work
	if rate > 0 {
		s.Rate, s.KeyRate = rate, 0
	}
	return s
}

// Spec is the validated workload.
func (r Plan) Spec() workload.Spec { return r.work }

func (r Plan) nodes() int {
	if r.LocalCluster > 0 {
		return r.LocalCluster
	}
	return len(r.Addrs)
}
