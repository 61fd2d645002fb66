// Package rls serves Envoy's rate limit service, version 3
// (envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit), over gRPC
// with the generated types of github.com/envoyproxy/go-control-plane: the
// only package that imports them and google.golang.org/grpc.
//
// Each descriptor of a request is one key (Key: domain and entries,
// escaped) decided for hits_addend tokens by the Decider, which the node
// backs with its own embedded decision path (shadow rules included). What
// the service promises, field by field:
//
//   - hits_addend (request level, or the descriptor's own when set) is the
//     n of AllowN; 0 means 1, as Envoy sends it. Negative hits
//     (is_negative_hits) are refunds, which a sliding window cannot take
//     back: such a descriptor is answered OK and counts nothing.
//   - Each descriptor is decided on its own, as envoyproxy/ratelimit does:
//     one OVER_LIMIT descriptor does not undo the others' admissions.
//     overall_code is OVER_LIMIT if any descriptor is, else OK.
//   - A descriptor's status carries current_limit (requests_per_unit and
//     unit, with unit_multiplier for windows of several seconds; a window
//     under a second is given per SECOND, scaled, and its exact rate is in
//     name, after the rule's pattern), limit_remaining (what the deciding
//     node could still admit: a hint, not the cluster's remainder) and
//     duration_until_reset: the retry-after of a denial, or the rule's
//     window for an admission (a sliding window has no reset; after one
//     window everything counted now has left it).
//   - A descriptor no rule matches is answered OK, or OVER_LIMIT with
//     Config.Unmatched.
//   - A request-level limit override (the descriptor's limit field) is not
//     honoured: limits are the cluster's, agreed by Raft, and a caller that
//     could name its own could lift it. By default the descriptor is
//     decided under the cluster's rule as if the override were absent;
//     Config.RefuseOverride answers the whole request INVALID_ARGUMENT
//     instead (Envoy then applies its failure_mode_deny).
//   - response_headers_to_add carries the IETF RateLimit fields of the
//     strictest descriptor (package rlheader), as the SDK's HTTP middleware
//     writes them.
//   - gRPC errors: INVALID_ARGUMENT for a request no key can be made from
//     (too many descriptors, a key too long, no entries) or with a refused
//     override; UNAVAILABLE while the node does not serve (starting, not a
//     member, shutting down); INTERNAL otherwise. Envoy treats each as a
//     failure of the service (failure_mode_deny).
//
// Authentication is the transport's: Config.TLS, whose client certificate
// rules the node makes the same as on its client port.
package rls

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/rlheader"
	"github.com/quotamesh/quotamesh/limits"
)

// Bounds on a request.
const (
	// MaxDescriptors is the most descriptors one request may carry.
	MaxDescriptors = 64
	// maxMessage bounds a request's encoded size.
	maxMessage = 64 << 10
)

// Decider decides n tokens for key, as quotamesh.Limiter.AllowN does, and
// names the pattern of the rule that governs key ("" when none does).
type Decider interface {
	Decide(ctx context.Context, key string, n int64) (d quotamesh.Decision, rule string, err error)
}

// Outcome names how a request was answered, for the caller's metrics.
type Outcome string

// Outcomes.
const (
	OutcomeOK          Outcome = "ok"
	OutcomeOverLimit   Outcome = "over_limit"
	OutcomeBadRequest  Outcome = "bad_request"
	OutcomeUnavailable Outcome = "unavailable"
	OutcomeError       Outcome = "error"
)

// Config configures a Server.
type Config struct {
	// Decider decides every descriptor. Required.
	Decider Decider
	// TLS is the server's TLS configuration (certificate, client
	// certificate policy). Nil serves plain gRPC: tests only.
	TLS *tls.Config
	// Unmatched answers OVER_LIMIT, instead of OK, for descriptors no rule
	// matches.
	Unmatched bool
	// RefuseOverride answers a request that carries a limit override
	// INVALID_ARGUMENT instead of deciding it under the cluster's rule.
	RefuseOverride bool
	// Observe, if set, is called once per request with its outcome and,
	// for a refused override, true.
	Observe func(o Outcome, override bool)
}

// Server is the rate limit service. Create it with New, run it with Serve,
// stop it with GracefulStop or Stop.
type Server struct {
	rlsv3.UnimplementedRateLimitServiceServer
	cfg  Config
	grpc *grpc.Server
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	rlsv3.RegisterRateLimitServiceServer(s.grpc, s)
	return s
}

// Serve accepts connections on ln until GracefulStop or Stop; it returns
// nil after either.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// GracefulStop stops accepting and waits for the calls in progress, until
// ctx ends; then it closes every connection.
func (s *Server) GracefulStop(ctx context.Context) {
	done := make(chan struct{})
	go func() { // ends when GracefulStop does, which Stop below forces
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

// ShouldRateLimit answers one request.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	resp, o, override, err := s.answer(ctx, req)
	if s.cfg.Observe != nil {
		s.cfg.Observe(o, override)
	}
	return resp, err
}

// decided is one descriptor's answer.
type decided struct {
	d    quotamesh.Decision
	rule string
	over bool
}

func (s *Server) answer(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, Outcome, bool, error) {
	descs := req.GetDescriptors()
	switch {
	case len(descs) == 0:
		return nil, OutcomeBadRequest, false, status.Error(codes.InvalidArgument, "quotamesh/rls: the request has no descriptors")
	case len(descs) > MaxDescriptors:
		return nil, OutcomeBadRequest, false, status.Errorf(codes.InvalidArgument, "quotamesh/rls: the request has %d descriptors; at most %d are allowed", len(descs), MaxDescriptors)
	}
	// Every key first: a request that is partly malformed counts nothing.
	keys := make([]string, len(descs))
	override := false
	entries := make([]Entry, 0, 8)
	for i, d := range descs {
		if d.GetLimit() != nil {
			override = true
			if s.cfg.RefuseOverride {
				return nil, OutcomeBadRequest, true, status.Errorf(codes.InvalidArgument,
					"quotamesh/rls: descriptor %d carries a limit override; limits are the cluster's, set with 'quotamesh limit', and a caller cannot change them", i)
			}
		}
		entries = entries[:0]
		for _, e := range d.GetEntries() {
			entries = append(entries, Entry{Key: e.GetKey(), Value: e.GetValue()})
		}
		k, err := Key(req.GetDomain(), entries)
		if err != nil {
			return nil, OutcomeBadRequest, override, status.Errorf(codes.InvalidArgument, "quotamesh/rls: descriptor %d: %v", i, err)
		}
		keys[i] = k
	}
	n := int64(req.GetHitsAddend())
	if n == 0 {
		n = 1
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs))}
	strictest := -1
	results := make([]decided, len(descs))
	for i, d := range descs {
		if d.GetIsNegativeHits() {
			resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
			continue
		}
		hits := n
		if h := d.GetHitsAddend(); h != nil && h.GetValue() > 0 {
			hits = int64(min(h.GetValue(), math.MaxInt64))
		}
		r, err := s.decide(ctx, keys[i], hits)
		if err != nil {
			switch {
			case errors.Is(err, quotamesh.ErrUnavailable), errors.Is(err, quotamesh.ErrClosed):
				return nil, OutcomeUnavailable, override, status.Errorf(codes.Unavailable, "quotamesh/rls: %v", err)
			case errors.Is(err, limits.ErrInvalidKey), errors.Is(err, quotamesh.ErrInvalidN):
				return nil, OutcomeBadRequest, override, status.Errorf(codes.InvalidArgument, "quotamesh/rls: descriptor %d: %v", i, err)
			}
			return nil, OutcomeError, override, status.Errorf(codes.Internal, "quotamesh/rls: descriptor %d: %v", i, err)
		}
		results[i] = r
		resp.Statuses[i] = s.descriptorStatus(r)
		if r.over {
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		}
		if r.d.Unlimited {
			continue
		}
		if strictest < 0 || stricter(r, results[strictest]) {
			strictest = i
		}
	}
	if strictest >= 0 {
		r := results[strictest]
		name := r.rule
		if name == "" {
			name = "default"
		}
		d := r.d
		if !r.over {
			d.Allowed, d.RetryAfter = true, 0
		}
		for _, f := range rlheader.Fields(name, d) {
			resp.ResponseHeadersToAdd = append(resp.ResponseHeadersToAdd, &corev3.HeaderValue{Key: f[0], Value: f[1]})
		}
	}
	o := OutcomeOK
	if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		o = OutcomeOverLimit
	}
	return resp, o, override, nil
}

// stricter reports whether a says more about the caller's limit than b:
// a denial over an admission, then less remaining.
func stricter(a, b decided) bool {
	if a.over != b.over {
		return a.over
	}
	return a.d.Remaining < b.d.Remaining
}

// decide decides one key. n above the key's whole limit is OVER_LIMIT
// with no retry, as no wait admits it.
func (s *Server) decide(ctx context.Context, key string, n int64) (decided, error) {
	d, rule, err := s.cfg.Decider.Decide(ctx, key, n)
	switch {
	case errors.Is(err, quotamesh.ErrExceedsLimit):
		return decided{d: d, rule: rule, over: true}, nil
	case errors.Is(err, quotamesh.ErrTooManyKeys):
		// The node tracks all the keys it may: its when-full answer is in d.
		return decided{d: d, rule: rule, over: !d.Allowed}, nil
	case err != nil:
		return decided{}, err
	case d.Unlimited:
		return decided{d: d, over: s.cfg.Unmatched}, nil
	}
	return decided{d: d, rule: rule, over: !d.Allowed}, nil
}

func (s *Server) descriptorStatus(r decided) *rlsv3.RateLimitResponse_DescriptorStatus {
	st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	if r.over {
		st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	if r.d.Unlimited || r.d.Limit == (limits.Rate{}) {
		return st
	}
	st.CurrentLimit = currentLimit(r.rule, r.d.Limit)
	st.LimitRemaining = uint32(min(max(r.d.Remaining, 0), math.MaxUint32))
	reset := r.d.Limit.Window
	if r.over {
		reset = r.d.RetryAfter
		if reset <= 0 || reset > r.d.Limit.Window {
			// Never (n above the limit) or further than a window: a
			// window is the most anything counted now can hold on.
			reset = r.d.Limit.Window
		}
	}
	st.DurationUntilReset = durationpb.New(reset)
	return st
}

// currentLimit expresses a rate in RLS units: whole minutes as MINUTE,
// whole seconds as SECOND with unit_multiplier, shorter windows scaled to
// per SECOND. name is "<pattern> <rate>", the exact rule.
func currentLimit(pattern string, r limits.Rate) *rlsv3.RateLimitResponse_RateLimit {
	rl := &rlsv3.RateLimitResponse_RateLimit{Name: fmt.Sprintf("%s %s", pattern, r), RequestsPerUnit: uint32(min(r.Count, math.MaxUint32))}
	switch {
	case r.Window == time.Minute:
		rl.Unit = rlsv3.RateLimitResponse_RateLimit_MINUTE
	case r.Window%time.Second == 0:
		rl.Unit = rlsv3.RateLimitResponse_RateLimit_SECOND
		if m := r.Window / time.Second; m > 1 {
			rl.UnitMultiplier = wrapperspb.UInt32(uint32(m))
		}
	default:
		rl.Unit = rlsv3.RateLimitResponse_RateLimit_SECOND
		rl.RequestsPerUnit = uint32(min(int64(math.Round(r.PerSecond())), math.MaxUint32))
	}
	return rl
}

// Descriptor builds a descriptor of entries in the generated type, for
// clients and tests.
func Descriptor(entries ...Entry) *rlv3.RateLimitDescriptor {
	d := &rlv3.RateLimitDescriptor{}
	for _, e := range entries {
		d.Entries = append(d.Entries, &rlv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value})
	}
	return d
}
