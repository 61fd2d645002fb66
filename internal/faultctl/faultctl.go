// Package faultctl is a node's fault layer: its socket wrapped with faultnet,
// and admin endpoints through which the fault suite skews its clock and
// breaks its network. A program attaches it to a node by starting the node
// with nodehook.Options{Fault: faultctl.Attach}; the quotamesh binary does
// so for `serve --fault-control` when built with the fault tag, and only
// then (docs/faults.md).
//
// Never attach it in production: anyone who reaches the admin listener can
// then skew the node's clock and break its network.
package faultctl

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/quotamesh/quotamesh/internal/nodehook"
)

var _ nodehook.Fault = Attach

// Attach is the fault layer for nodehook.Options.Fault. A node given no
// socket gets one opened on Target.Listen and wrapped with faultnet; a node
// given a *faultnet.Conn keeps it, and the layer acts on it; any other
// socket is kept as it is, and /debug/fault/net then answers 501. The
// admin listener serves:
//
//	/debug/fault/clock  GET reads the clock offset; POST ?offset=250ms sets
//	                    it (node time moves by it at once, backwards too)
//	/debug/fault/net    GET reads the socket's faults and counters; POST
//	                    changes them (see serveNet)
//	/debug/fault/disk   GET reads the Raft log's write delay; POST
//	                    ?delay=100ms sets it (a slow disk; 0 heals it)
func Attach(t nodehook.Target) (nodehook.Attached, error) {
	var a nodehook.Attached
	fc, _ := t.PacketConn.(*faultnet.Conn)
	if t.PacketConn == nil {
		c, err := faultnet.Listen(t.Listen, t.Seed)
		if err != nil {
			return a, err
		}
		fc, a.PacketConn, a.Close = c, c, c.Close
	}
	l := &layer{conn: fc, clock: t.Clock, disk: t.Disk, log: t.Log}
	a.Routes = map[string]http.Handler{
		"/debug/fault/clock": http.HandlerFunc(l.serveClock),
		"/debug/fault/net":   http.HandlerFunc(l.serveNet),
		"/debug/fault/disk":  http.HandlerFunc(l.serveDisk),
	}
	return a, nil
}

// layer is the fault layer on one node.
type layer struct {
	conn  *faultnet.Conn // nil when the node's socket is not a faultnet.Conn
	clock nodehook.Offset
	disk  nodehook.Delay // nil when the node gave none
	log   zerolog.Logger
}

// serveDisk reads (GET) or sets (POST ?delay=100ms) how long each write to
// the node's Raft log and stable store waits (a slow disk; 0 heals it).
func (l *layer) serveDisk(w http.ResponseWriter, r *http.Request) {
	if l.disk == nil {
		http.Error(w, "this node has no slow-disk control", http.StatusNotImplemented)
		return
	}
	if r.Method == http.MethodPost {
		d, err := time.ParseDuration(r.URL.Query().Get("delay"))
		if err != nil || d < 0 || d > time.Minute {
			http.Error(w, fmt.Sprintf("delay %q: want a duration from 0 to 1m", r.URL.Query().Get("delay")), http.StatusBadRequest)
			return
		}
		l.disk.SetDelay(d)
		l.log.Warn().Dur("delay", d).Str("remote", r.RemoteAddr).Msg("FAULT: Raft log writes delayed")
	} else if r.Method != http.MethodGet {
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, map[string]any{"delay_ns": l.disk.Delay(), "delay": l.disk.Delay().String()})
}

// serveClock reads (GET) or sets (POST ?offset=250ms) the clock offset.
func (l *layer) serveClock(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		d, err := time.ParseDuration(r.URL.Query().Get("offset"))
		if err != nil {
			http.Error(w, fmt.Sprintf("offset %q: %v", r.URL.Query().Get("offset"), err), http.StatusBadRequest)
			return
		}
		l.clock.SetOffset(d)
		l.log.Warn().Dur("offset", d).Str("remote", r.RemoteAddr).Msg("FAULT: clock offset set")
	} else if r.Method != http.MethodGet {
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, map[string]any{"offset_ns": l.clock.Offset(), "offset": l.clock.Offset().String()})
}

// netState is what /debug/fault/net reports.
type netState struct {
	Faults faultnet.Faults `json:"faults"`
	Stats  faultnet.Stats  `json:"stats"`
}

// serveNet reads (GET) or changes (POST) the faults on the node's socket.
// POST parameters, applied in this order: heal=1 removes every fault and
// block; drop (0 to 1), delay, jitter, reorder (0 to 1) and reorder_delay
// replace the faults when any is given (missing ones are zero); block,
// block_out and unblock take comma-separated host:port addresses
// (partitions: block discards datagrams to and from them, block_out only
// those to them).
func (l *layer) serveNet(w http.ResponseWriter, r *http.Request) {
	fc := l.conn
	if fc == nil {
		http.Error(w, "this node's socket is not a faultnet.Conn: start it without a PacketConn, or with one made by internal/faultnet", http.StatusNotImplemented)
		return
	}
	if r.Method == http.MethodPost {
		if err := applyFaults(fc, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		l.log.Warn().Str("query", r.URL.RawQuery).Str("remote", r.RemoteAddr).Msg("FAULT: network faults changed")
	} else if r.Method != http.MethodGet {
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, netState{Faults: fc.Faults(), Stats: fc.Stats()})
}
func applyFaults(fc *faultnet.Conn, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("heal") != "" {
		fc.Heal()
	}
	var f faultnet.Faults
	set := false
	for _, p := range []struct {
		name string
		dst  *float64
	}{{"drop", &f.Drop}, {"reorder", &f.Reorder}} {
		if s := q.Get(p.name); s != "" {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return fmt.Errorf("%s %q: %w", p.name, s, err)
			}
			*p.dst, set = v, true
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Duration
	}{{"delay", &f.Delay}, {"jitter", &f.Jitter}, {"reorder_delay", &f.ReorderDelay}} {
		if s := q.Get(p.name); s != "" {
			v, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("%s %q: %w", p.name, s, err)
			}
			*p.dst, set = v, true
		}
	}
	if set {
		if err := fc.SetFaults(f); err != nil {
			return err
		}
	}
	for _, op := range []struct {
		name string
		fn   func(...net.Addr)
	}{{"block", fc.Block}, {"block_out", fc.BlockOut}, {"unblock", fc.Unblock}} {
		s := q.Get(op.name)
		if s == "" {
			continue
		}
		var addrs []net.Addr
		for _, a := range strings.Split(s, ",") {
			ua, err := net.ResolveUDPAddr("udp", strings.TrimSpace(a))
			if err != nil {
				return fmt.Errorf("%s address %q: %w", op.name, a, err)
			}
			addrs = append(addrs, ua)
		}
		op.fn(addrs...)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
