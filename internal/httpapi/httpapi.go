// Package httpapi serves QuotaMesh decisions over HTTP, for callers in any
// language: one endpoint,
//
//	POST /v1/allow  {"key": "user:42", "n": 1}
//
// answered 200 (admitted) or 429 (denied) with the same JSON body either
// way, and the IETF RateLimit fields (package rlheader):
//
//	{"allowed": true, "key": "user:42", "n": 1, "remaining": 9,
//	 "retry_after_ms": 0, "limit": "10/s", "rule": "user:*", "unlimited": false}
//
// n is optional (default 1). retry_after_ms is, after a denial, when a
// retry may succeed (-1: no wait helps, e.g. a key no rule matches on a node
// whose unknown_keys is deny). remaining is what the deciding node could
// still admit: a hint. limit and rule are empty, and unlimited true, for a key no
// rule matches (the node's unknown_keys policy then answered).
//
// Bad input is a 4xx with {"error": "...", "code": "..."} and decides
// nothing: 400 bad_request (malformed JSON, an unknown field, a wrong type,
// no key, n not positive, a key outside the key alphabet, anything after
// the object), 405 (not POST), 413 (a body over 16 KiB), 415 (a
// Content-Type other than JSON), 422 exceeds_limit (n above the key's
// whole limit: no wait admits it). 503 unavailable (with Retry-After: 1)
// while the node does not serve.
//
// Authentication is the transport's: the server's TLS configuration, whose
// client certificate rules the node makes the same as on its client port.
package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/rlheader"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

// Path is the decision endpoint.
const Path = "/v1/allow"

// maxBody bounds a request body.
const maxBody = 16 << 10

// Decider decides n tokens for key, as quotamesh.Limiter.AllowN does, and
// names the pattern of the rule that governs key ("" when none does).
type Decider interface {
	Decide(ctx context.Context, key string, n int64) (d quotamesh.Decision, rule string, err error)
}

// Outcome names how a request was answered, for the caller's metrics.
type Outcome string

// Outcomes.
const (
	OutcomeAllowed     Outcome = "allowed"
	OutcomeDenied      Outcome = "denied"
	OutcomeBadRequest  Outcome = "bad_request"
	OutcomeUnavailable Outcome = "unavailable"
	OutcomeError       Outcome = "error"
)

// Config configures a Server.
type Config struct {
	// Decider decides every request. Required.
	Decider Decider
	// TLS is the server's TLS configuration. Nil serves plain HTTP: tests
	// only.
	TLS *tls.Config
	// Observe, if set, is called once per request with its outcome.
	Observe func(Outcome)
	// ErrorLog receives the HTTP server's own errors (refused handshakes,
	// broken connections); nil discards them.
	ErrorLog *log.Logger
}

// Request is the body of POST /v1/allow.
type Request struct {
	Key string `json:"key"`
	// N is how many tokens to decide, all or none; 0 or absent means 1.
	N int64 `json:"n"`
}

// Response is the body of an answered decision.
type Response struct {
	Allowed   bool   `json:"allowed"`
	Key       string `json:"key"`
	N         int64  `json:"n"`
	Remaining int64  `json:"remaining"`
	// RetryAfterMs is 0 when allowed.
	RetryAfterMs int64  `json:"retry_after_ms"`
	Limit        string `json:"limit"`
	Rule         string `json:"rule"`
	Unlimited    bool   `json:"unlimited"`
}

// Error is the body of a refused request.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Server is the HTTP decision API.
type Server struct {
	cfg  Config
	http *http.Server
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, s.allow)
	s.http = &http.Server{
		Handler:           mux,
		TLSConfig:         cfg.TLS,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          cfg.ErrorLog,
	}
	if s.http.ErrorLog == nil {
		s.http.ErrorLog = log.New(io.Discard, "", 0)
	}
	return s
}

// Handler returns the server's handler (tests, embedding).
func (s *Server) Handler() http.Handler { return s.http.Handler }

// Serve serves on ln until Shutdown; it returns nil after it.
func (s *Server) Serve(ln net.Listener) error {
	var err error
	if s.cfg.TLS != nil {
		err = s.http.ServeTLS(ln, "", "")
	} else {
		err = s.http.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, waits for the requests in progress until ctx
// ends, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) {
	if err := s.http.Shutdown(ctx); err != nil {
		_ = s.http.Close()
	}
}

func (s *Server) allow(w http.ResponseWriter, r *http.Request) {
	o := s.answer(w, r)
	if s.cfg.Observe != nil {
		s.cfg.Observe(o)
	}
}

func (s *Server) answer(w http.ResponseWriter, r *http.Request) Outcome {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return refuse(w, http.StatusMethodNotAllowed, "bad_request", fmt.Sprintf("method %s: use POST", r.Method))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return refuse(w, http.StatusUnsupportedMediaType, "bad_request", fmt.Sprintf("Content-Type %q: send application/json", ct))
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return refuse(w, http.StatusRequestEntityTooLarge, "bad_request", fmt.Sprintf("body over %d bytes", maxBody))
		}
		return refuse(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
	}
	req, err := parse(body)
	if err != nil {
		return refuse(w, http.StatusBadRequest, "bad_request", err.Error())
	}
	d, rule, err := s.cfg.Decider.Decide(r.Context(), req.Key, req.N)
	switch {
	case err == nil, errors.Is(err, quotamesh.ErrTooManyKeys): // the latter holds the node's when-full answer
	case errors.Is(err, limits.ErrInvalidKey), errors.Is(err, quotamesh.ErrInvalidN):
		return refuse(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, quotamesh.ErrExceedsLimit):
		return refuse(w, http.StatusUnprocessableEntity, "exceeds_limit", err.Error())
	case errors.Is(err, quotamesh.ErrUnavailable), errors.Is(err, quotamesh.ErrClosed):
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "unavailable", err.Error())
		return OutcomeUnavailable
	default:
		refuse(w, http.StatusInternalServerError, "internal", err.Error())
		return OutcomeError
	}
	resp := Response{Allowed: d.Allowed, Key: req.Key, N: req.N, Remaining: max(d.Remaining, 0), Rule: rule, Unlimited: d.Unlimited}
	if !d.Unlimited && d.Limit != (limits.Rate{}) {
		resp.Limit = d.Limit.String()
	}
	if !d.Allowed {
		resp.RetryAfterMs = d.RetryAfter.Milliseconds()
		if d.RetryAfter == window.Never {
			resp.RetryAfterMs = -1
		}
	}
	name := rule
	if name == "" {
		name = "default"
	}
	for _, f := range rlheader.Fields(name, d) {
		w.Header().Set(f[0], f[1])
	}
	status, o := http.StatusOK, OutcomeAllowed
	if !d.Allowed {
		status, o = http.StatusTooManyRequests, OutcomeDenied
	}
	writeJSON(w, status, resp)
	return o
}

// parse reads a request strictly: one JSON object with known fields of the
// right types and a key, and nothing after it.
func parse(body []byte) (Request, error) {
	var req Request
	if len(bytes.TrimSpace(body)) == 0 {
		return req, errors.New(`empty body: send {"key": "...", "n": 1}`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr):
			return req, fmt.Errorf("field %q: got a JSON %s, want %s", typeErr.Field, typeErr.Value, jsonType(typeErr.Type.Kind().String()))
		case errors.As(err, &syntaxErr):
			return req, fmt.Errorf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return req, errors.New("malformed JSON: the body ends inside the object")
		}
		return req, fmt.Errorf("malformed request: %v", err)
	}
	if dec.More() {
		return req, errors.New("malformed request: more than one JSON value in the body")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("malformed request: data after the JSON object")
	}
	switch {
	case req.Key == "":
		return req, errors.New(`field "key" is missing or empty`)
	case req.N < 0:
		return req, fmt.Errorf(`field "n" is %d: use a positive number of tokens (default 1)`, req.N)
	case req.N == 0:
		req.N = 1
	}
	return req, nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "int64":
		return "a whole number"
	}
	return kind
}

func refuse(w http.ResponseWriter, status int, code, msg string) Outcome {
	writeJSON(w, status, Error{Error: msg, Code: code})
	return OutcomeBadRequest
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // plain structs: cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
