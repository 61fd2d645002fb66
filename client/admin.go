package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh"
	"github.com/quotamesh/quotamesh/internal/route"
	"github.com/quotamesh/quotamesh/internal/wire"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/transport"
)

// Admin operations run one per stream: the SDK opens a stream on its
// connection, writes one AdminRequest, closes its side and reads one
// AdminReply. A limit change waits for Raft, which must never hold up the
// request stream. They are not retried on another node: a change whose
// answer was lost may have been applied, and the caller decides.

// SetLimit makes rule the limit for its pattern, through Raft, from
// whichever node the client is connected to. It returns the Raft index the
// change was applied at. Errors wrap limits.ErrInvalidRate or
// limits.ErrInvalidPattern (checked before sending), ErrForbidden,
// quotamesh.ErrUnavailable (no leader or quorum in time, or no node),
// quotamesh.ErrClosed.
func (c *Client) SetLimit(ctx context.Context, rule limits.Rule) (uint64, error) {
	if err := rule.Validate(); err != nil {
		return 0, fmt.Errorf("quotamesh/client: set limit: %w", err)
	}
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminLimitSet, Rule: rule})
	if err != nil {
		return 0, err
	}
	return rep.Index, nil
}

// DeleteLimit deletes the rule for pattern and returns the Raft index of the
// change. Errors wrap limits.ErrNoRule when there is no such rule, and
// otherwise as SetLimit's.
func (c *Client) DeleteLimit(ctx context.Context, pattern string) (uint64, error) {
	if _, err := limits.ParsePattern(pattern); err != nil {
		return 0, fmt.Errorf("quotamesh/client: delete limit: %w", err)
	}
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminLimitDelete, Pattern: pattern})
	if err != nil {
		return 0, err
	}
	return rep.Index, nil
}

// GetLimit returns the rule for pattern (the rule with exactly that
// pattern, not the one a key would match), read linearizably. Errors wrap
// limits.ErrNoRule when there is none.
func (c *Client) GetLimit(ctx context.Context, pattern string) (limits.Rule, error) {
	if _, err := limits.ParsePattern(pattern); err != nil {
		return limits.Rule{}, fmt.Errorf("quotamesh/client: get limit: %w", err)
	}
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminLimitGet, Pattern: pattern})
	if err != nil {
		return limits.Rule{}, err
	}
	if len(rep.Rules) != 1 {
		// A node that found no rule answers CodeNoRule; an empty OK is a
		// node bug.
		return limits.Rule{}, fmt.Errorf("quotamesh/client: get limit %q: node answered %d rules: %w", pattern, len(rep.Rules), ErrProtocol)
	}
	return rep.Rules[0], nil
}

// ListLimits returns every rule, read linearizably.
func (c *Client) ListLimits(ctx context.Context) ([]limits.Rule, error) {
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminLimitList})
	if err != nil {
		return nil, err
	}
	return rep.Rules, nil
}

// Status returns the status document (JSON) of the node the client is
// connected to.
func (c *Client) Status(ctx context.Context) (json.RawMessage, error) {
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminStatus})
	if err != nil {
		return nil, err
	}
	if !json.Valid(rep.Status) {
		return nil, fmt.Errorf("quotamesh/client: status: node answered %d bytes that are not JSON: %w", len(rep.Status), ErrProtocol)
	}
	return json.RawMessage(rep.Status), nil
}

// Join asks the cluster to add node at addr (its UDP address) as a member,
// and returns the Raft index of the change.
func (c *Client) Join(ctx context.Context, node, addr string) (uint64, error) {
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminJoin, Node: node, Addr: addr})
	if err != nil {
		return 0, err
	}
	return rep.Index, nil
}

// Leave asks the cluster to remove node, and returns the Raft index of the
// change.
func (c *Client) Leave(ctx context.Context, node string) (uint64, error) {
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminLeave, Node: node})
	if err != nil {
		return 0, err
	}
	return rep.Index, nil
}

// admin runs one admin request on a stream of its own, on a connection to
// any node, and maps the reply's code to an error.
func (c *Client) admin(ctx context.Context, req wire.AdminRequest) (*wire.AdminReply, error) {
	return c.adminAt(ctx, nil, req)
}

// adminOn runs one admin request on cn.
func (c *Client) adminOn(ctx context.Context, cn *conn, req wire.AdminRequest) (*wire.AdminReply, error) {
	s, err := cn.cc.OpenStream(ctx)
	if err != nil {
		return nil, c.adminErr(ctx, cn, req.Op, fmt.Errorf("open stream: %w", err))
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	stopCancel := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Unix(1, 0)) })
	defer stopCancel()

	req.ID = c.nextID.Add(1)
	frame, err := wire.Append(nil, &req)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/client: admin %s: %w: %w", req.Op, ErrBadRequest, err)
	}
	if _, err := s.Write(frame); err != nil {
		return nil, c.adminErr(ctx, cn, req.Op, fmt.Errorf("write: %w", err))
	}
	_ = s.CloseWrite()
	body, err := wire.ReadFrame(bufio.NewReader(s), wire.MaxFrame)
	if err != nil {
		return nil, c.adminErr(ctx, cn, req.Op, fmt.Errorf("read: %w", err))
	}
	m, err := wire.Decode(body)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/client: admin %s: %w: %w", req.Op, ErrProtocol, err)
	}
	rep, ok := m.(*wire.AdminReply)
	if !ok || rep.ID != req.ID {
		return nil, fmt.Errorf("quotamesh/client: admin %s: %w: answered by a %T for request %d", req.Op, ErrProtocol, m, req.ID)
	}
	if err := codeErr(rep.Code, rep.Message); err != nil {
		return nil, fmt.Errorf("quotamesh/client: admin %s: %w", req.Op, err)
	}
	return rep, nil
}

// anyConn returns a connection to some node (the nearest with
// WithNearest, else the first up in ID order), waiting within ctx while
// none is up.
func (c *Client) anyConn(ctx context.Context) (*conn, error) {
	for {
		c.parkMu.Lock()
		changed := c.changed
		c.parkMu.Unlock()
		if rt := c.routes.Load(); rt != nil && rt.nearest != "" {
			if l := rt.links[rt.nearest]; l != nil {
				if cn := l.conn(); cn != nil {
					return cn, nil
				}
			}
		}
		for _, l := range c.allLinks() {
			if cn := l.conn(); cn != nil {
				return cn, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("quotamesh/client: waiting for a node: %w", errors.Join(quotamesh.ErrUnavailable, ctx.Err()))
		case <-c.closing:
			return nil, closedErr("waiting for a node")
		}
	}
}

// adminErr explains a failed admin exchange on cn: Close, the context, a
// refused certificate, or the connection.
func (c *Client) adminErr(ctx context.Context, cn *conn, op wire.AdminOp, err error) error {
	ce := cn.cc.Err()
	if ce == nil && transport.Refused(err) {
		// The stream saw the TLS alert before the connection's own error
		// was set.
		ce = fmt.Errorf("%w: %w", transport.ErrCertificateRefused, err)
	}
	switch {
	case c.closed.Load():
		return closedErr("admin " + op.String())
	case isCertErr(ce):
		cn.fail(ce)
		return fmt.Errorf("quotamesh/client: admin %s: %w: %w", op, ErrCertificate, ce)
	case ctx.Err() != nil:
		return fmt.Errorf("quotamesh/client: admin %s: %w (%v)", op, ctx.Err(), err)
	}
	return fmt.Errorf("quotamesh/client: admin %s: %w: %w", op, quotamesh.ErrUnavailable, err)
}

var _ quotamesh.Inspector = (*Client)(nil)

// CurrentQPS returns key's usage as the key's home node sees it (the node
// its decisions go to; another node if the home is down): the rule, the
// home's own rates, every node's rates and window counts as its views hold
// them, and the room left in the window (quotamesh.KeyStats). One admin
// round trip on a stream of its own, never on the decision path; it needs
// the read permission (a client certificate of any role). Errors wrap
// limits.ErrInvalidKey (checked before sending), ErrForbidden,
// quotamesh.ErrUnavailable, quotamesh.ErrClosed.
func (c *Client) CurrentQPS(ctx context.Context, key string) (quotamesh.KeyStats, error) {
	if err := limits.ValidateKey(key); err != nil {
		return quotamesh.KeyStats{}, fmt.Errorf("quotamesh/client: current qps: %w", err)
	}
	req := wire.AdminRequest{Op: wire.AdminKeyShow, Pattern: key}
	var rep *wire.AdminReply
	var err error
	var home *conn
	if l := c.pick(route.Hash(key), ""); l != nil {
		home = l.conn() // nil if it went down since: any node then
	}
	rep, err = c.adminAt(ctx, home, req)
	if err != nil {
		return quotamesh.KeyStats{}, err
	}
	var st quotamesh.KeyStats
	if err := json.Unmarshal(rep.Status, &st); err != nil || st.Key != key {
		return quotamesh.KeyStats{}, fmt.Errorf("quotamesh/client: current qps %q: node answered %d bytes that are not its usage (%v): %w", clip(key), len(rep.Status), err, ErrProtocol)
	}
	return st, nil
}

// Reset starts the limit of key, or of every key a pattern such as
// "user:*" matches, afresh across the cluster, through Raft, from whichever
// node the client is connected to (see quotamesh.Inspector). It returns
// once the reset is in force on that node, with the slot edge from which
// every node counts again. It needs the admin role. Errors wrap
// limits.ErrInvalidPattern (checked before sending), ErrForbidden,
// quotamesh.ErrUnavailable (no leader or quorum in time: the reset may
// still take effect), quotamesh.ErrClosed.
func (c *Client) Reset(ctx context.Context, keyOrPattern string) (quotamesh.ResetResult, error) {
	if _, err := limits.ParsePattern(keyOrPattern); err != nil {
		return quotamesh.ResetResult{}, fmt.Errorf("quotamesh/client: reset: %w", err)
	}
	rep, err := c.admin(ctx, wire.AdminRequest{Op: wire.AdminKeyReset, Pattern: keyOrPattern})
	if err != nil {
		return quotamesh.ResetResult{}, err
	}
	var res quotamesh.ResetResult
	if err := json.Unmarshal(rep.Status, &res); err != nil || res.Pattern != keyOrPattern {
		return quotamesh.ResetResult{}, fmt.Errorf("quotamesh/client: reset %q: node answered %d bytes that are not a reset (%v): %w", clip(keyOrPattern), len(rep.Status), err, ErrProtocol)
	}
	return res, nil
}

// adminAt runs one admin request on cn, or on a connection to any node
// if cn is nil, within the client's admin timeout unless ctx has a
// deadline; Close ends the wait too.
func (c *Client) adminAt(ctx context.Context, cn *conn, req wire.AdminRequest) (*wire.AdminReply, error) {
	if c.closed.Load() {
		return nil, closedErr("admin")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.adminTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopClosing := context.AfterFunc(c.stopCtx, cancel)
	defer stopClosing()
	if cn == nil {
		var err error
		if cn, err = c.anyConn(ctx); err != nil {
			return nil, err
		}
	}
	return c.adminOn(ctx, cn, req)
}
