// Requests: the workload's arrivals, decided by the nodes themselves or
// by SDK clients (client.go), logged with their outcomes, and the report.

package sim

import (
	"slices"
	"time"

	"github.com/quotamesh/quotamesh/internal/accuracy"
	"github.com/quotamesh/quotamesh/internal/workload"
)

// nextArrival schedules the workload's next arrival.
func (s *sim) nextArrival() {
	if a, ok := s.gen.Next(); ok {
		s.q.push(event{at: s.cfg.Warmup + a.At, kind: evArrival, node: a.Node, key: int32(a.Key)})
	}
}

// arrive offers one request for key at node i now: to one of the node's
// SDK clients, or to the node itself.
func (s *sim) arrive(i, key int) {
	if len(s.clients) > 0 {
		c := s.clients[i*s.cfg.Clients+s.crng.IntN(s.cfg.Clients)]
		s.clientCall(c, key, s.record(i, key))
		return
	}
	n := s.nodes[i]
	if n.down {
		return // the request never reaches the cluster
	}
	rec := s.record(i, key)
	if n.pausedTo > s.now {
		n.delayed = append(n.delayed, rec) // waits for the process (pause.go)
		return
	}
	s.serve(i, rec)
}

// record logs a request offered now for key at node i.
func (s *sim) record(i, key int) int32 {
	return int32(s.log.Append(accuracy.Request{At: s.now - s.cfg.Warmup, Key: uint32(key), Node: uint16(i)}))
}

// decided fills in the outcome of request rec, decided now.
func (s *sim) decided(rec int32, o accuracy.Outcome) {
	r := s.log.At(int(rec))
	r.Outcome, r.Done = o, s.now-s.cfg.Warmup
}

// keyName is the name of key i.
func (s *sim) keyName(i int) string {
	if i < len(s.names) {
		return s.names[i]
	}
	return s.work.KeyName(i)
}

// Route is where a node decides a request (Config.Route).
type Route string

// The routes.
const (
	RouteLocal Route = "local"
	RouteHome  Route = "home"
	RouteThin  Route = "thin"
)

// serve decides request rec at node i now, or sends it to its key's home
// as Config.Route says.
func (s *sim) serve(i int, rec int32) {
	n := s.nodes[i]
	if n.down {
		return
	}
	if s.cfg.Route != RouteLocal {
		name := s.keyName(int(s.log.At(int(rec)).Key))
		if h := s.homeOf(name); h != i && s.links[i][h].up && (s.cfg.Route == RouteHome || n.eng.Thin(s.nodeTime(n), name)) {
			d := s.cfg.RTT / 2
			if s.cfg.Jitter > 0 {
				d += time.Duration(s.rng.Int64N(int64(s.cfg.Jitter)))
			}
			s.q.push(event{at: s.now + d, kind: evForward, node: h, from: i, key: rec})
			s.res.Routed++
			return
		}
	}
	s.decide(i, rec)
}

// homeOf is the node index of key's home among all members, as the
// decision APIs route (their SDK client fails over when the home cannot
// be reached; serve sends nothing over a link that is down).
func (s *sim) homeOf(key string) int {
	id, _ := s.routes.Home(key)
	return s.nodeIndex(id)
}

// forwarded decides request rec, which node from sent, at its key's home
// h; if h died meanwhile, from decides it (the SDK's failover).
func (s *sim) forwarded(from, h int, rec int32) {
	if s.nodes[h].down {
		s.decide(from, rec)
		return
	}
	s.decide(h, rec)
}

// decide decides request rec at node i now, as an embedded node does.
func (s *sim) decide(i int, rec int32) {
	n := s.nodes[i]
	if n.down {
		return
	}
	d, err := n.eng.AllowN(s.nodeTime(n), s.keyName(int(s.log.At(int(rec)).Key)), 1)
	switch {
	case err != nil:
		s.decided(rec, accuracy.Failed)
	case d.Allowed:
		s.decided(rec, accuracy.Admitted)
	default:
		s.decided(rec, accuracy.Denied)
	}
}

func (s *sim) report() Result {
	r := s.res
	acc := accuracy.Evaluate(s.log, accuracy.Run{Keys: s.work.Keys, Nodes: s.ids, Rate: s.work.Limit,
		Base: base + int64(s.cfg.Warmup), Duration: s.cfg.Duration, KeyName: s.work.KeyName, Resets: s.res.ResetFloors})
	r.Report, r.PerSecond, r.Failed, r.IdealMaxWindowRatio = acc.Report, acc.PerSecond, acc.Failed, acc.IdealMaxWindowRatio
	r.Pattern = string(s.cfg.Pattern)
	if s.cfg.Workload != nil {
		r.Pattern = workload.ShapeString(s.work)
	}
	r.Workload = s.work.String()
	r.Duration = s.cfg.Duration.String()
	secs := int(s.cfg.Duration / time.Second)
	r.PerSecond = r.PerSecond[:min(len(r.PerSecond), max(secs, 1))]
	for i := range s.log.Len() {
		if q := s.log.At(i); q.Outcome == accuracy.Admitted {
			r.admits = append(r.admits, q.Done)
		}
	}
	slices.Sort(r.admits)
	return r
}
