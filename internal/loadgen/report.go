package loadgen

import (
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/workload"
)

// Report is what `quotamesh bench --json` prints: the accuracy fields of
// `quotamesh sim --json` plus what only real processes show. Run fills
// everything it measures; Mode, Rate, the CPU fields and TCPBaseline are
// the caller's to fill.
type Report struct {
	accuracy.Report
	// Workload describes the offered load (workload.Spec.String).
	Workload string `json:"workload"`
	// IdealMaxWindowRatio is max_window_ratio of the ideal's admissions:
	// far above the limit a sliding window of slots admits a window's room
	// as soon as a slot opens, so any real 1 s interval straddling a slot
	// edge can hold up to twice the limit, in the ideal as in the cluster.
	IdealMaxWindowRatio float64 `json:"ideal_max_window_ratio"`
	// PerSecond is the cluster's admitted count (all keys) in each whole
	// second of the load, each admission in the second it was decided in
	// (the node's time for a node's decision, the SDK's for a lease's).
	PerSecond []int64 `json:"per_second"`
	// Mode is "lease" (the SDK decides from leases) or "strict" (a round
	// trip per decision).
	Mode string `json:"mode"`
	// Rate is the constant offered rate asked for with --rate (0: the
	// pattern's multiplier × limit).
	Rate float64 `json:"rate"`
	// AchievedRPS is decisions answered (admitted or denied) per second of
	// wall time, from the start of the load to the last answer.
	AchievedRPS float64 `json:"achieved_rps"`
	// Latencies, in microseconds, from each request's intended send time
	// (so a late generator or a stalled call counts: no coordinated
	// omission) to its answer.
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	P999us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`
	// P99usPerSecond is the P99 latency of the requests due in each whole
	// second of the load: where in the run the slow ones were.
	P99usPerSecond []int64 `json:"p99_us_per_second"`
	// ServiceP50us and ServiceP99us time only the call itself (from when a
	// worker picked the request up): the difference to P50us/P99us is the
	// time requests waited for the generator or a free worker.
	ServiceP50us float64 `json:"service_p50_us"`
	ServiceP99us float64 `json:"service_p99_us"`
	// GenP50us, GenP99us and GenMaxUs are the generator's own lateness:
	// from each request's intended time to when the generator handed it to
	// a worker. It is part of every latency above.
	GenP50us float64 `json:"gen_p50_us"`
	GenP99us float64 `json:"gen_p99_us"`
	GenMaxUs float64 `json:"gen_max_us"`
	// CPU time used during the load, in seconds per 100,000 decisions
	// answered: by this process (the SDK clients and the generator) and,
	// with --local-cluster on Linux, by the node processes (0 otherwise:
	// not measured).
	ClientCPUPer100k float64 `json:"client_cpu_s_per_100k"`
	NodesCPUPer100k  float64 `json:"nodes_cpu_s_per_100k,omitempty"`
	// Answered counts decisions (admitted or denied). The latencies above
	// are theirs.
	Answered int64 `json:"answered"`
	// Overloaded counts calls answered "overloaded" (an error wrapping
	// quotamesh.ErrOverloaded: the SDK's overload policy, because a node
	// said so or every place in flight stayed taken): neither decisions
	// nor errors. OverloadedP50us and OverloadedP99us are their latencies
	// from intended time, in microseconds.
	Overloaded      int64   `json:"overloaded"`
	OverloadedP50us float64 `json:"overloaded_p50_us"`
	OverloadedP99us float64 `json:"overloaded_p99_us"`
	// SDK is what the SDK clients sent for those decisions (zero when the
	// limiters are not SDK clients).
	SDK *SDKTraffic `json:"sdk,omitempty"`
	// Errors counts calls that returned an error (no decision).
	Errors int64 `json:"errors"`
	// FirstError is the first error a call returned, if any.
	FirstError string `json:"first_error,omitempty"`
	// Unsent counts arrivals the generator dropped because it fell more
	// than Spec.MaxLag behind the schedule; they are not in Offered.
	Unsent int64 `json:"unsent"`
	// TCPBaseline is the same load against plain pipelined TCP
	// request/response on loopback, measured in the same run
	// (--tcp-baseline).
	TCPBaseline *Report `json:"tcp_baseline,omitempty"`
	// Elapsed is the wall time of the load, to the last answer.
	Elapsed string `json:"elapsed"`
}

// SDKTraffic is what the SDK clients sent during a load, per decision
// answered, and the keys they held state for at its end.
type SDKTraffic struct {
	// RequestsPerDecision counts every request sent (decisions, lease
	// requests, settlements, reports); LeaseRequestsPerDecision those that
	// asked for a lease.
	RequestsPerDecision      float64 `json:"requests_per_decision"`
	LeaseRequestsPerDecision float64 `json:"lease_requests_per_decision"`
	// NodeDecisionsPerDecision counts the calls a node decided (the rest
	// were decided from leases).
	NodeDecisionsPerDecision float64 `json:"node_decisions_per_decision"`
	// KeysWithState is the keys holding lease state, over the clients.
	KeysWithState int64 `json:"keys_with_state"`
	// Overloads counts calls the SDKs answered by their overload policy
	// (Report.Overloaded, as the SDKs count them); of them, NodeOverloads
	// were answered "overloaded" by a node, the rest found no place in
	// flight.
	Overloads     int64 `json:"overloads"`
	NodeOverloads int64 `json:"node_overloads"`
}

// summarize merges the nodes' results and the log's accuracy into a
// report.
func summarize(nodes []*nodeLoad, log *accuracy.Log, ws workload.Spec, spec Spec, start time.Time) Report {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.name
	}
	acc := accuracy.Evaluate(log, accuracy.Run{Keys: ws.Keys, Nodes: names, Rate: ws.Limit, Base: start.UnixNano(),
		Duration: ws.Duration, KeyName: ws.KeyName})
	r := Report{Report: acc.Report, IdealMaxWindowRatio: acc.IdealMaxWindowRatio, PerSecond: acc.PerSecond,
		Workload: ws.String()}
	r.Pattern = spec.Name
	if r.Pattern == "" {
		r.Pattern = workload.ShapeString(ws)
	}
	r.Duration = ws.Duration.String()
	latency, service, shed := newHist(), newHist(), newHist()
	var perSec []*hdrhistogram.Histogram
	var answered int64
	var last time.Duration
	for _, n := range nodes {
		latency.Merge(n.latency)
		for len(perSec) < len(n.perSec) {
			perSec = append(perSec, hdrhistogram.New(1, histMaxUs, 2))
		}
		for i, h := range n.perSec {
			perSec[i].Merge(h)
		}
		service.Merge(n.service)
		shed.Merge(n.shedLat)
		r.Overloaded += n.overloaded
		r.Errors += n.errors
		if n.firstErr != nil && r.FirstError == "" {
			r.FirstError = n.name + ": " + n.firstErr.Error()
		}
		answered += n.answered
		last = max(last, n.last)
	}
	r.Answered = answered
	if last > 0 {
		r.AchievedRPS = float64(answered) / last.Seconds()
	}
	r.Elapsed = last.Round(time.Millisecond).String()
	r.P50us = float64(latency.ValueAtQuantile(50))
	r.P99us = float64(latency.ValueAtQuantile(99))
	r.P999us = float64(latency.ValueAtQuantile(99.9))
	r.MaxUs = float64(latency.Max())
	for _, h := range perSec {
		r.P99usPerSecond = append(r.P99usPerSecond, h.ValueAtQuantile(99))
	}
	r.OverloadedP50us = float64(shed.ValueAtQuantile(50))
	r.OverloadedP99us = float64(shed.ValueAtQuantile(99))
	r.ServiceP50us = float64(service.ValueAtQuantile(50))
	r.ServiceP99us = float64(service.ValueAtQuantile(99))
	return r
}
