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
)

// startAdmin serves the admin HTTP listener:
//
//	/metrics        Prometheus metrics (this node's registry)
//	/healthz        200 while the process runs
//	/readyz         200 when Ready, else 503 with the reasons
//	/status         the Status document (JSON); ?top=N keys (default 10)
//	/keys/{key}     one key's usage (quotamesh.KeyStats, JSON), GET only
//	/debug/pprof/   the runtime profiles, unless DisablePprof
//
// and the fault layer's endpoints when the node was started with one
// (internal/nodehook; never in production).
func (n *Node) startAdmin() {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(n.gatherer, promhttp.HandlerOpts{ErrorLog: promLogger{n}}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", n.serveReady)
	mux.HandleFunc("/status", n.serveStatus)
	mux.HandleFunc("GET /keys/{key...}", n.serveKey)
	if !n.cfg.DisablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	for path, h := range n.fault.Routes {
		mux.Handle(path, h)
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
