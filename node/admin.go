package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/quotamesh/quotamesh/internal/faultnet"
)

// startAdmin serves the admin HTTP listener:
//
//	/metrics        Prometheus metrics (this node's registry)
//	/healthz        200 while the process runs
//	/readyz         200 when Ready, else 503 with the reasons
//	/status         the Status document (JSON); ?top=N keys (default 10)
//	/debug/pprof/   the runtime profiles
//
// and, with FaultControl only, /debug/fault/clock and /debug/fault/net.
func (n *Node) startAdmin() {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.gatherer, promhttp.HandlerOpts{ErrorLog: promLogger{n}}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", n.serveReady)
	mux.HandleFunc("/status", n.serveStatus)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if n.cfg.FaultControl {
		mux.HandleFunc("/debug/fault/clock", n.serveFaultClock)
		mux.HandleFunc("/debug/fault/net", n.serveFaultNet)
	}
	n.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	srv, ln := n.http, n.adminLn
	n.misc.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.adminLog.Error().Err(err).Msg("admin listener stopped")
		}
	})
}

// promLogger routes promhttp's errors to the admin log.
type promLogger struct{ n *Node }

// Println implements promhttp.Logger.
func (l promLogger) Println(v ...any) { l.n.adminLog.Error().Msg(fmt.Sprint(v...)) }

func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	why := n.notReady()
	if len(why) == 0 {
		fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, "not ready: "+strings.Join(why, "; "))
}

func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	top := statusTopKeys
	if s := r.URL.Query().Get("top"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 1000 {
			http.Error(w, fmt.Sprintf("top %q: use 0 to 1000", s), http.StatusBadRequest)
			return
		}
		top = v
	}
	writeJSON(w, n.Status(top))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// serveFaultClock reads (GET) or sets (POST ?offset=250ms) the test-only
// clock offset: node time moves by it at once, backwards too.
func (n *Node) serveFaultClock(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		d, err := time.ParseDuration(r.URL.Query().Get("offset"))
		if err != nil {
			http.Error(w, fmt.Sprintf("offset %q: %v", r.URL.Query().Get("offset"), err), http.StatusBadRequest)
			return
		}
		n.skew.SetOffset(d)
		n.m.clockSkew.Set(d.Seconds())
		n.adminLog.Warn().Dur("offset", d).Str("remote", r.RemoteAddr).Msg("FAULT: clock offset set")
	} else if r.Method != http.MethodGet {
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, map[string]any{"offset_ns": n.skew.Offset(), "offset": n.skew.Offset().String()})
}

// faultNetState is what /debug/fault/net reports.
type faultNetState struct {
	Faults faultnet.Faults `json:"faults"`
	Stats  faultnet.Stats  `json:"stats"`
}

// serveFaultNet reads (GET) or changes (POST) the faults on this node's
// socket. POST parameters, applied in this order: heal=1 removes every
// fault and block; drop (0 to 1), delay, jitter, reorder (0 to 1) and
// reorder_delay replace the faults when any is given (missing ones are
// zero); block and unblock take comma-separated host:port addresses
// (partitions: datagrams to and from them are discarded).
func (n *Node) serveFaultNet(w http.ResponseWriter, r *http.Request) {
	fc := n.fault
	if fc == nil {
		http.Error(w, "this node's socket is not a faultnet.Conn: start it without a PacketConn, or with one made by internal/faultnet", http.StatusNotImplemented)
		return
	}
	if r.Method == http.MethodPost {
		if err := n.applyFaults(fc, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n.adminLog.Warn().Str("query", r.URL.RawQuery).Str("remote", r.RemoteAddr).Msg("FAULT: network faults changed")
	} else if r.Method != http.MethodGet {
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(w, faultNetState{Faults: fc.Faults(), Stats: fc.Stats()})
}

func (n *Node) applyFaults(fc *faultnet.Conn, r *http.Request) error {
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
	}{{"block", fc.Block}, {"unblock", fc.Unblock}} {
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
