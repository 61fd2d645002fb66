package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quotamesh/quotamesh/internal/consensus"
	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
	"github.com/quotamesh/quotamesh/window"
)

// The client protocol (ALPN quotamesh-client/3 or /2, design.md §10 and §11).
// A client opens bidirectional streams on its connection and writes frames
// on them: ClientBatch (decisions and leases) and AdminRequest. On each
// stream the node answers every ClientBatch with one ClientReplies frame,
// in the order the batches came, and every AdminRequest with one
// AdminReply, which may overtake or trail batch replies (match by ID).
const (
	// streamQueue is how many reply frames a stream holds while its writer
	// is busy. When it is full the stream stops deciding, its reader stops
	// once streamReadAhead frames wait, and QUIC flow control stops the
	// client: a slow client costs at most these frames (plus one being
	// decided) per stream, and the transport bounds its streams
	// (MaxIncomingStreams, 256).
	streamQueue = 8
	// streamReadAhead is how many frames a stream's reader reads ahead of
	// the decisions, undecoded: the node's own queue, where a batch's wait
	// is measured (Config.ClientMaxWait). When it is full the reader stops
	// reading and QUIC flow control stops the client.
	streamReadAhead = 16
	// maxAdminInFlight bounds the admin operations one stream has running;
	// more are answered CodeUnavailable at once.
	maxAdminInFlight = 4
	// adminTimeout bounds one admin operation (Raft writes and reads wait
	// for a leader at most this long).
	adminTimeout = 10 * time.Second
	// writeTimeout bounds writing one reply frame: a client that does not
	// read for this long loses the stream.
	writeTimeout = 10 * time.Second
	// statusTopKeys is how many keys the status document lists.
	statusTopKeys = 10
)

// ServeClient serves one client connection until it ends or the node
// shuts down: each stream the client opens gets a goroutine (tracked, and
// waited for before ServeClient returns).
func (h handler) ServeClient(c *transport.ClientConn) {
	n := h.n
	if !n.acceptClients.Load() || !n.clients.enter() {
		return // starting or shutting down: the transport closes the connection
	}
	defer n.clients.leave()
	id := c.Identity()
	conn := n.clientConns.Add(1) // names the connection's leases
	// An SDK of the current protocol reads decision times.
	decided := c.Protocol() == transport.ALPNClient
	ctx, cancel := context.WithCancel(n.clientCtx)
	defer cancel()
	var streams sync.WaitGroup
	defer streams.Wait() // before cancel: streams end with the connection, or with the node
	for {
		// Returns an error when the connection ends or the node shuts down.
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			n.serveStream(ctx, s, id, conn, decided)
		}()
	}
}

// actionOf is what an admin operation asks, for transport.Identity.May: the
// membership query is part of deciding (the SDK routes keys with it), status
// and limit reads are reads, the rest changes the cluster.
func actionOf(op wire.AdminOp) transport.Action {
	switch op {
	case wire.AdminMembers:
		return transport.ActionDecide
	case wire.AdminStatus, wire.AdminLimitGet, wire.AdminLimitList, wire.AdminKeyShow:
		return transport.ActionRead
	}
	return transport.ActionAdminister
}

// serveStream reads frames from one stream and answers them. A reader
// goroutine reads and decodes frames ahead, at most streamReadAhead of
// them, stamping each with when it was read; decisions are answered on
// this goroutine, in order, and a batch that waited longer than
// Config.ClientMaxWait is answered "overloaded" without deciding
// (overWait). Admin operations run on goroutines of their own (at most
// maxAdminInFlight), so that a Raft write waiting for a leader never stalls
// the decisions behind it. One writer goroutine writes the replies.
// decided: replies to decisions carry the node's decision time.
func (n *Node) serveStream(ctx context.Context, s *transport.Stream, id transport.Identity, conn uint64, decided bool) {
	out := make(chan []byte, streamQueue)
	free := make(chan []byte, streamQueue+1)
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		n.writeReplies(s, out, free)
	}()
	base := time.Now()
	mono := func() int64 { return int64(time.Since(base)) }
	// stalled is the time this goroutine spent waiting for the writer:
	// the client's share of a batch's wait, not the node's.
	var stalled atomic.Int64
	in := make(chan readFrame, streamReadAhead)
	done := make(chan struct{})
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		defer close(in)
		n.readFrames(ctx, s, id, in, done, mono, &stalled)
	}()
	// Shutdown: stop reading; what was read is still answered.
	stopRead := context.AfterFunc(ctx, func() { _ = s.SetReadDeadline(time.Now()) })
	var admins sync.WaitGroup
	sem := make(chan struct{}, maxAdminInFlight)
	defer func() {
		close(done)
		_ = s.SetReadDeadline(time.Now()) // the reader leaves a blocked read
		reader.Wait()
		stopRead()
		admins.Wait()
		close(out)
		writer.Wait()
		_ = s.Close()
	}()

	dec := wire.NewDecoder()
	enc := wire.NewEncoder()
	maxWait := n.cfg.ClientMaxWait
	var replies wire.ClientReplies
	for f := range in {
		msg, err := dec.Decode(f.body)
		if err != nil {
			// Nothing to match a reply to: the client broke the protocol.
			if ok, _ := n.rejectLog.Allow("client\x00"+id.String(), time.Now()); ok {
				n.clientLog.Warn().Err(err).Str("client", id.String()).Str("remote", s.RemoteAddr().String()).Msg("undecodable client frame; stream closed")
			}
			return
		}
		switch m := msg.(type) {
		case *wire.ClientBatch:
			shed := overWait(f.at, f.stalled, mono(), stalled.Load(), maxWait)
			replies.Items = n.answerBatch(conn, decided, m.Items, shed, replies.Items[:0])
			buf := getBuf(free)
			frame, err := enc.Append(buf, &replies)
			if errors.Is(err, wire.ErrTooLarge) {
				// A full batch of errors with long messages can outgrow a
				// frame: the codes say enough.
				for i := range replies.Items {
					replies.Items[i].Message = ""
				}
				frame, err = enc.Append(buf, &replies)
			}
			if err != nil {
				n.clientLog.Error().Err(err).Msg("encoding replies")
				return
			}
			clear(replies.Items) // drop key-sized messages
			select {
			case out <- frame:
				continue
			default:
			}
			t0 := mono()
			select {
			case out <- frame:
				stalled.Add(mono() - t0)
			case <-ctx.Done():
				return
			}
		case *wire.AdminRequest:
			n.adminRequest(ctx, m, id, out, sem, &admins)
		default:
			if ok, _ := n.rejectLog.Allow("client\x00"+id.String(), time.Now()); ok {
				n.clientLog.Warn().Str("client", id.String()).Str("type", fmt.Sprintf("%T", msg)).Msg("unexpected message on a client stream; stream closed")
			}
			return
		}
	}
}

// readFrame is a frame's body read from a client stream: when it was read
// and how long the stream had stalled on its client by then (monotonic
// nanoseconds since the stream began).
type readFrame struct {
	body        []byte
	at, stalled int64
}

// readFrames reads frames from s into in until the stream ends or done is
// closed. It only reads: decoding is the decisions' work, so that what
// waits for the node waits in in, where its wait is measured, rather
// than in the transport's buffers.
func (n *Node) readFrames(ctx context.Context, s *transport.Stream, id transport.Identity, in chan<- readFrame, done <-chan struct{},
	mono func() int64, stalled *atomic.Int64) {
	br := bufio.NewReaderSize(s, 16<<10)
	for {
		body, err := wire.ReadFrame(br, wire.MaxFrame)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				n.clientLog.Debug().Err(err).Str("client", id.String()).Msg("client stream ended")
			}
			return
		}
		select {
		case in <- readFrame{body: body, at: mono(), stalled: stalled.Load()}:
		case <-done:
			return
		}
	}
}

func getBuf(free chan []byte) []byte {
	select {
	case b := <-free:
		return b[:0]
	default:
		return nil
	}
}

// writeReplies writes reply frames until out is closed. After a write
// error it keeps draining out (discarding), so that nobody blocks on it.
func (n *Node) writeReplies(s *transport.Stream, out <-chan []byte, free chan<- []byte) {
	failed := false
	for frame := range out {
		if failed {
			continue
		}
		_ = s.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := s.Write(frame); err != nil {
			failed = true
			_ = s.Close() // the reader fails too
			continue
		}
		if cap(frame) <= 64<<10 {
			select {
			case free <- frame:
			default:
			}
		}
	}
}

// answerBatch decides every request of a batch at one node time and
// appends the replies to dst. conn names the client connection; with
// decided, a reply to a decision carries that time (wire.ClientReply.Decided).
// With shed, the batch waited too long (overWait): its requests are
// answered CodeOverloaded without deciding, save those that settle a lease
// or report demand (sheddable).
func (n *Node) answerBatch(conn uint64, decided bool, items []wire.ClientRequest, shed bool, dst []wire.ClientReply) []wire.ClientReply {
	state := n.state.Load()
	now := n.now()
	for i := range items {
		r := &items[i]
		rep := wire.ClientReply{ID: r.ID}
		switch {
		case state == stateClosed:
			rep.Code, rep.Message = wire.CodeShuttingDown, ErrStopped.Error()
		case state != stateServing:
			rep.Code, rep.Message = wire.CodeUnavailable, ErrNotServing.Error()
		case r.Op == wire.OpDecide && r.N <= 0:
			rep.Code, rep.Message = wire.CodeInvalidN, fmt.Sprintf("n %d for key %q: n must be positive", r.N, clip(r.Key))
		case r.Op == wire.OpLease && r.N != 0:
			rep.Code, rep.Message = wire.CodeBadRequest, fmt.Sprintf("lease request for key %q with n %d: a lease decides nothing, n must be 0", clip(r.Key), r.N)
		case shed && sheddable(r) && (r.Op == wire.OpDecide || r.Op == wire.OpLease):
			rep.Code = wire.CodeOverloaded // no message: the code says it, and the reply stays small
		case r.Op == wire.OpDecide, r.Op == wire.OpLease:
			n.request(now, conn, r, &rep)
			if decided && r.Op == wire.OpDecide && rep.Code == wire.CodeOK {
				rep.Decided = now
			}
		default:
			rep.Code, rep.Message = wire.CodeBadRequest, fmt.Sprintf("unknown op %d", r.Op)
		}
		switch r.Op {
		case wire.OpDecide:
			n.m.decide[rep.Code].Inc()
		case wire.OpLease:
			n.m.lease[rep.Code].Inc()
		}
		dst = append(dst, rep)
	}
	return dst
}

// request serves one decision or lease request of connection conn.
func (n *Node) request(now int64, conn uint64, r *wire.ClientRequest, rep *wire.ClientReply) {
	g, err := n.eng.Request(now, engine.Request{Key: r.Key, Client: conn, N: r.N, Want: r.Want,
		Offered: r.Offered, SettleID: r.SettleID, SettleUsed: r.SettleUsed})
	rep.Allowed, rep.LeaseID, rep.Granted, rep.TTL = g.Allowed, g.LeaseID, g.Granted, g.TTL
	rep.Remaining, rep.RetryAfter, rep.Limit, rep.Unlimited = g.Remaining, g.RetryAfter, g.Limit, g.Unlimited
	err = n.shadowReply(r, rep, err)
	if err != nil {
		rep.Code, rep.Message = replyCode(err), message(err)
	}
}

// replyCode is the wire code of an error from the engine or consensus.
func replyCode(err error) wire.Code {
	switch {
	case err == nil:
		return wire.CodeOK
	case errors.Is(err, limits.ErrInvalidKey) && !errors.Is(err, limits.ErrInvalidPattern):
		return wire.CodeInvalidKey
	case errors.Is(err, window.ErrInvalidN), errors.Is(err, engine.ErrInvalidRequest):
		return wire.CodeInvalidN
	case errors.Is(err, window.ErrExceedsLimit):
		return wire.CodeExceedsLimit
	case errors.Is(err, window.ErrTooManyKeys):
		return wire.CodeTooManyKeys
	case errors.Is(err, limits.ErrNoRule):
		return wire.CodeNoRule
	case errors.Is(err, limits.ErrInvalidRate), errors.Is(err, limits.ErrInvalidPattern):
		return wire.CodeInvalidRate
	case errors.Is(err, ErrForbidden), errors.Is(err, consensus.ErrForbidden):
		return wire.CodeForbidden
	case errors.Is(err, consensus.ErrClosed), errors.Is(err, ErrStopped):
		return wire.CodeShuttingDown
	case errors.Is(err, consensus.ErrTimeout), errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrNotLeader),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrNotServing):
		return wire.CodeUnavailable
	case errors.Is(err, consensus.ErrBadRequest), errors.Is(err, limits.ErrTooManyRules), errors.Is(err, limits.ErrDuplicateRule),
		errors.Is(err, limits.ErrInvalidReset):
		return wire.CodeBadRequest
	}
	return wire.CodeInternal
}

// message is an error's text, clipped to what a reply carries.
func message(err error) string {
	s := err.Error()
	if len(s) > wire.MaxMessageLen {
		s = s[:wire.MaxMessageLen]
	}
	return s
}

// adminRequest runs an admin operation off the stream's read path and
// queues its reply; a refusal is queued at once.
func (n *Node) adminRequest(ctx context.Context, m *wire.AdminRequest, id transport.Identity, out chan<- []byte, sem chan struct{}, wg *sync.WaitGroup) {
	reply := func(r *wire.AdminReply) {
		n.m.clientRequests.WithLabelValues(m.Op.String(), r.Code.String()).Inc()
		frame, err := wire.Append(nil, r)
		if err != nil {
			n.adminLog.Error().Err(err).Msg("encoding an admin reply")
			frame, _ = wire.Append(nil, &wire.AdminReply{ID: r.ID, Code: wire.CodeInternal, Message: "reply too large"})
		}
		select {
		case out <- frame:
		case <-ctx.Done():
		}
	}
	switch action := actionOf(m.Op); {
	case !id.May(action):
		why := id.Why(action)
		if ok, suppressed := n.rejectLog.Allow("forbidden\x00"+id.String(), time.Now()); ok {
			n.adminLog.Warn().Str("client", id.String()).Str("role", id.Role.String()).Str("op", m.Op.String()).
				Int("suppressed", suppressed).Msg("client request refused: " + why)
		}
		reply(&wire.AdminReply{ID: m.ID, Code: wire.CodeForbidden, Message: fmt.Sprintf("%v: %s", ErrForbidden, why)})
		return
	case n.state.Load() == stateClosed:
		reply(&wire.AdminReply{ID: m.ID, Code: wire.CodeShuttingDown, Message: ErrStopped.Error()})
		return
	}
	select {
	case sem <- struct{}{}:
	default:
		reply(&wire.AdminReply{ID: m.ID, Code: wire.CodeUnavailable, Message: fmt.Sprintf("%d admin operations already in progress on this stream", maxAdminInFlight)})
		return
	}
	wg.Add(1)
	go func() { // waited for by serveStream before it returns
		defer wg.Done()
		defer func() { <-sem }()
		actx, cancel := context.WithTimeout(ctx, adminTimeout)
		defer cancel()
		r := n.admin(actx, m)
		l := n.adminLog.Info()
		if r.Code != wire.CodeOK {
			l = l.Str("error", r.Message)
		}
		l.Str("client", id.String()).Str("op", m.Op.String()).Str("code", r.Code.String()).Msg("admin operation")
		reply(r)
	}()
}

// admin runs one admin operation.
func (n *Node) admin(ctx context.Context, m *wire.AdminRequest) *wire.AdminReply {
	r := &wire.AdminReply{ID: m.ID}
	var err error
	switch m.Op {
	case wire.AdminLimitSet:
		r.Index, err = n.SetLimit(ctx, m.Rule)
	case wire.AdminLimitDelete:
		r.Index, err = n.DeleteLimit(ctx, m.Pattern)
	case wire.AdminLimitGet:
		var rule limits.Rule
		var ok bool
		if rule, ok, err = n.GetLimit(ctx, m.Pattern); ok {
			r.Rules = []limits.Rule{rule}
		} else if err == nil {
			// The SDK reads an OK with no rule as a protocol violation.
			err = fmt.Errorf("quotamesh/node: get %q: %w", clip(m.Pattern), limits.ErrNoRule)
		}
	case wire.AdminLimitList:
		r.Rules, err = n.ListLimits(ctx)
	case wire.AdminStatus:
		r.Status, err = n.statusJSON()
	case wire.AdminJoin:
		err = n.Join(ctx, m.Node, m.Addr)
	case wire.AdminLeave:
		err = n.Leave(ctx, m.Node)
	case wire.AdminMembers:
		r.Members, err = n.routeMembers()
	case wire.AdminKeyShow:
		r.Status, err = n.keyJSON(m.Pattern)
	case wire.AdminKeyReset:
		r.Status, r.Index, err = n.resetJSON(ctx, m.Pattern)
	default:
		r.Code, r.Message = wire.CodeBadRequest, fmt.Sprintf("unknown admin op %d", m.Op)
		return r
	}
	if err != nil {
		r.Code, r.Message = replyCode(err), message(err)
		r.Rules, r.Status = nil, nil
	}
	return r
}

// routeMembers lists the members and the addresses they serve on, as this
// node's Raft configuration has them.
func (n *Node) routeMembers() ([]wire.Member, error) {
	ms, err := n.store.Members()
	if err != nil {
		return nil, err
	}
	out := make([]wire.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, wire.Member{Node: m.ID, Addr: m.Address})
	}
	return out, nil
}

// statusJSON is the status document, trimmed to fit a reply.
func (n *Node) statusJSON() ([]byte, error) {
	st := n.Status(statusTopKeys)
	for {
		b, err := json.Marshal(st)
		if err != nil {
			return nil, fmt.Errorf("quotamesh/node: encoding the status: %w", err)
		}
		if len(b) <= wire.MaxStatusLen || len(st.TopKeys) == 0 {
			return b, nil
		}
		st.TopKeys = st.TopKeys[:len(st.TopKeys)/2]
	}
}
