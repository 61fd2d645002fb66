package wire

import (
	"fmt"
	"math"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// Client message types (ALPN quotamesh-client/3, and /2 without
// ClientReply.Decided; design.md §10).
const (
	// TypeClientBatch carries requests from a client to a node.
	TypeClientBatch Type = FirstClientType + iota
	// TypeClientReplies carries a node's answers, matched by request ID.
	TypeClientReplies
	// TypeAdminRequest asks a node for an operation on the cluster.
	TypeAdminRequest
	// TypeAdminReply answers an AdminRequest.
	TypeAdminReply
)

// Caps on client messages, checked by encoder and decoder alike.
const (
	// MaxBatch is the most requests or replies one frame carries.
	MaxBatch = 4096
	// MaxMessageLen is the longest error message in a reply, in bytes.
	MaxMessageLen = 1024
	// MaxStatusLen is the longest status document, in bytes.
	MaxStatusLen = 512 << 10
)

// Op is what a ClientRequest asks for.
type Op uint8

const (
	// OpDecide asks the node to decide N requests now, all or none; a
	// request may also ask for a lease (Want), settle one (SettleID) and
	// report demand (Offered): the lease rides on the decision.
	OpDecide Op = 1
	// OpLease asks for a lease of up to Want tokens without a decision (N
	// must be 0), settles one and reports demand; Want 0 only settles and
	// reports.
	OpLease Op = 2
)

// String returns the op's name, "decide" or "lease": the op label of the
// node's client request metrics.
func (op Op) String() string { return enumName(op, "Op", "", "decide", "lease") }

// enumName returns names[v], the name of value v, or kind(v) for a value
// without a name (beyond names, or named "").
func enumName[T ~uint8](v T, kind string, names ...string) string {
	if int(v) < len(names) && names[v] != "" {
		return names[v]
	}
	return fmt.Sprintf("%s(%d)", kind, uint8(v))
}

// Code is the outcome of a request: OK, or the identity of an error, so a
// client rebuilds errors.Is-comparable errors without comparing strings.
type Code uint8

// Reply codes.
const (
	CodeOK           Code = 0
	CodeInvalidKey   Code = 1 // the key is malformed
	CodeInvalidN     Code = 2 // n is negative (or zero where not allowed)
	CodeExceedsLimit Code = 3 // n is larger than the key's whole limit
	CodeTooManyKeys  Code = 4 // the node tracks as many keys as it may
	CodeBadRequest   Code = 5 // the request makes no sense (unknown op, bad field)
	CodeForbidden    Code = 6 // the client may not do this (admin operations)
	CodeNoRule       Code = 7 // no limit rule has this pattern
	CodeInvalidRate  Code = 8 // the rule's rate or pattern is invalid
	CodeUnavailable  Code = 9 // no leader or no quorum in time; try again
	CodeShuttingDown Code = 10
	CodeInternal     Code = 11
	CodeOverloaded   Code = 12 // the node is past its capacity; answered at once without deciding
	maxCode               = CodeOverloaded
)

// NumCodes is the number of reply codes: they are 0 to NumCodes-1.
const NumCodes = int(maxCode) + 1

// String returns the code's name in snake case ("ok", "invalid_key", ...):
// the code label of the node's client request metrics.
func (c Code) String() string {
	return enumName(c, "Code", "ok", "invalid_key", "invalid_n", "exceeds_limit", "too_many_keys",
		"bad_request", "forbidden", "no_rule", "invalid_rate", "unavailable", "shutting_down", "internal", "overloaded")
}

// ClientRequest is one request in a ClientBatch.
type ClientRequest struct {
	// ID matches the reply; unique among the client's requests in flight.
	ID uint64
	// Op is OpDecide or OpLease.
	Op Op
	// Key is the key to limit, at most limits.MaxKeyLen bytes (the node
	// validates it and answers CodeInvalidKey).
	Key string
	// N is the number of requests to decide (OpDecide; 0 for OpLease).
	N int64
	// Want is how many tokens of a new lease the client would like; 0 for
	// none.
	Want int64
	// Offered is the calls the client denied locally for the key since its
	// last report: demand the node saw neither as a decision nor as a
	// lease's use.
	Offered int64
	// SettleID, if not zero, names a lease this node granted the client for
	// the key, of which SettleUsed tokens were used: the node counts those
	// as admitted now and frees the rest.
	SettleID   uint64
	SettleUsed int64
}

// ClientBatch is one frame of requests; 1 to MaxBatch of them.
type ClientBatch struct {
	Items []ClientRequest
}

// ClientReply answers one ClientRequest.
type ClientReply struct {
	// ID is the request's.
	ID uint64
	// Code is CodeOK or the error's identity; Message explains an error.
	Code    Code
	Message string
	// Allowed is the decision of an OpDecide request.
	Allowed bool
	// Granted tokens of a new lease, named LeaseID, are held for the client
	// for TTL: it may use them for TTL from when it sent the request, and
	// settles the lease with a later request.
	LeaseID uint64
	Granted int64
	TTL     time.Duration
	// Remaining is the room left in the node's quota after this request.
	Remaining int64
	// RetryAfter, when nothing was allowed or granted, is when to try
	// again.
	RetryAfter time.Duration
	// Limit is the key's rate; zero when Unlimited.
	Limit limits.Rate
	// Unlimited reports that no rule matched the key.
	Unlimited bool
	// Decided is the node's time when it decided an OpDecide request, in
	// Unix nanoseconds by the clock its slots follow (the wall clock with
	// the cluster's alignment): when the node counted an admission, so the
	// slot and the aligned second it fell in. Zero when not carried:
	// other replies, and every reply on a connection of the older client
	// protocol (ALPN quotamesh-client/2), whose SDKs read only the eleven
	// values before it. Encoded as a twelfth value only when not zero, so
	// a reply without it is byte for byte what it was before.
	Decided int64
}

// ClientReplies is one frame of replies; 1 to MaxBatch of them.
type ClientReplies struct {
	Items []ClientReply
}

// AdminOp is what an AdminRequest asks for.
type AdminOp uint8

// Admin operations.
const (
	AdminLimitSet    AdminOp = 1  // set Rule through Raft
	AdminLimitDelete AdminOp = 2  // delete the rule for Pattern
	AdminLimitGet    AdminOp = 3  // the rule for Pattern (linearizable)
	AdminLimitList   AdminOp = 4  // every rule (linearizable)
	AdminStatus      AdminOp = 5  // the node's status document
	AdminJoin        AdminOp = 6  // add Node at Addr to the cluster
	AdminLeave       AdminOp = 7  // remove Node from the cluster
	AdminMembers     AdminOp = 8  // the members and their addresses (Members), for routing
	AdminKeyShow     AdminOp = 9  // the usage of the key in Pattern (Status: quotamesh.KeyStats as JSON)
	AdminKeyReset    AdminOp = 10 // reset the key or pattern in Pattern (Index, Status: quotamesh.ResetResult as JSON)
	// MaxAdminOp is the last admin operation.
	MaxAdminOp = AdminKeyReset
	maxAdminOp = MaxAdminOp
)

// String returns the operation's name in snake case ("limit_set",
// "status", ...): the op label of the node's client request metrics, and
// the name in logs and errors.
func (op AdminOp) String() string {
	return enumName(op, "AdminOp", "", "limit_set", "limit_delete", "limit_get", "limit_list",
		"status", "join", "leave", "members", "key_show", "key_reset")
}

// AdminRequest asks a node for an operation on the cluster.
type AdminRequest struct {
	ID      uint64
	Op      AdminOp
	Rule    limits.Rule // AdminLimitSet
	Pattern string      // AdminLimitDelete, AdminLimitGet, AdminKeyShow (the key), AdminKeyReset
	Node    string      // AdminJoin, AdminLeave
	Addr    string      // AdminJoin
}

// AdminReply answers an AdminRequest.
type AdminReply struct {
	ID      uint64
	Code    Code
	Message string
	// Rules are the rules of a get (zero or one) or list.
	Rules []limits.Rule
	// Index is the Raft index a change was applied at.
	Index uint64
	// Status is the node's status document (JSON), for AdminStatus; the
	// key's usage (JSON), for AdminKeyShow; the reset's result (JSON), for
	// AdminKeyReset.
	Status []byte
	// Members are the cluster's members as this node knows them, for
	// AdminMembers: clients route each key to one of them (package route).
	Members []Member
}

// Member is one member of the cluster: its node ID and the address it
// serves peers and clients on.
type Member struct {
	Node, Addr string
}

// MaxMembers caps the members of an AdminReply.
const MaxMembers = 4096

// Type returns TypeClientBatch.
func (*ClientBatch) Type() Type { return TypeClientBatch }

// Type returns TypeClientReplies.
func (*ClientReplies) Type() Type { return TypeClientReplies }

// Type returns TypeAdminRequest.
func (*AdminRequest) Type() Type { return TypeAdminRequest }

// Type returns TypeAdminReply.
func (*AdminReply) Type() Type { return TypeAdminReply }

func (*ClientBatch) fields() int   { return 1 }
func (*ClientReplies) fields() int { return 1 }
func (*AdminRequest) fields() int  { return 7 }
func (*AdminReply) fields() int    { return 6 }

func (m *ClientBatch) validate() error {
	if len(m.Items) == 0 || len(m.Items) > MaxBatch {
		return fmt.Errorf("%w: client batch of %d requests; 1 to %d are allowed", ErrMalformed, len(m.Items), MaxBatch)
	}
	for i := range m.Items {
		r := &m.Items[i]
		if r.Op != OpDecide && r.Op != OpLease {
			return fmt.Errorf("%w: request %d: op %d; use %d (decide) or %d (lease)", ErrMalformed, i, r.Op, OpDecide, OpLease)
		}
		if len(r.Key) > limits.MaxKeyLen {
			return fmt.Errorf("%w: request %d: key of %d bytes; at most %d are allowed", ErrTooLarge, i, len(r.Key), limits.MaxKeyLen)
		}
	}
	return nil
}

func (m *ClientReplies) validate() error {
	if len(m.Items) == 0 || len(m.Items) > MaxBatch {
		return fmt.Errorf("%w: client replies of %d items; 1 to %d are allowed", ErrMalformed, len(m.Items), MaxBatch)
	}
	for i := range m.Items {
		r := &m.Items[i]
		if err := checkReply(i, r.Code, r.Message); err != nil {
			return err
		}
		if r.TTL < 0 || r.RetryAfter < 0 {
			return fmt.Errorf("%w: reply %d: TTL %v and retry-after %v must not be negative", ErrMalformed, i, r.TTL, r.RetryAfter)
		}
		if r.Decided < 0 {
			return fmt.Errorf("%w: reply %d: decided %d; a decision time is a Unix time in nanoseconds, after 1970", ErrMalformed, i, r.Decided)
		}
		if err := checkRate(r.Limit, true); err != nil {
			return fmt.Errorf("%w: reply %d: %w", ErrMalformed, i, err)
		}
	}
	return nil
}

func checkReply(i int, c Code, msg string) error {
	if c > maxCode {
		return fmt.Errorf("%w: reply %d: code %d is unknown", ErrMalformed, i, c)
	}
	if len(msg) > MaxMessageLen {
		return fmt.Errorf("%w: reply %d: message of %d bytes; at most %d are allowed", ErrTooLarge, i, len(msg), MaxMessageLen)
	}
	return nil
}

// checkRate accepts a valid rate, or the zero rate when zeroOK.
func checkRate(r limits.Rate, zeroOK bool) error {
	if zeroOK && r == (limits.Rate{}) {
		return nil
	}
	return r.Validate()
}

func (m *AdminRequest) validate() error {
	if m.Op < AdminLimitSet || m.Op > maxAdminOp {
		return fmt.Errorf("%w: admin op %d is unknown", ErrMalformed, m.Op)
	}
	if len(m.Rule.Pattern) > limits.MaxKeyLen || len(m.Pattern) > limits.MaxKeyLen {
		return fmt.Errorf("%w: admin pattern longer than %d bytes", ErrTooLarge, limits.MaxKeyLen)
	}
	if len(m.Node) > 64 || len(m.Addr) > MaxAddrLen {
		return fmt.Errorf("%w: admin node of %d bytes or address of %d bytes; at most 64 and %d", ErrTooLarge, len(m.Node), len(m.Addr), MaxAddrLen)
	}
	// The rule itself is validated by the node, which answers
	// CodeInvalidRate naming the bad value: a client's typo is not a
	// malformed frame. Only its encoding must be sane.
	if m.Rule.Rate.Count < 0 || m.Rule.Rate.Window < 0 {
		return fmt.Errorf("%w: admin rule with a negative count or window", ErrMalformed)
	}
	return nil
}

func (m *AdminReply) validate() error {
	if err := checkReply(0, m.Code, m.Message); err != nil {
		return err
	}
	if len(m.Rules) > limits.MaxRules {
		return fmt.Errorf("%w: admin reply of %d rules; at most %d", ErrTooLarge, len(m.Rules), limits.MaxRules)
	}
	for i, r := range m.Rules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("%w: admin reply rule %d: %w", ErrMalformed, i, err)
		}
	}
	if len(m.Status) > MaxStatusLen {
		return fmt.Errorf("%w: status of %d bytes; at most %d", ErrTooLarge, len(m.Status), MaxStatusLen)
	}
	if len(m.Members) > MaxMembers {
		return fmt.Errorf("%w: admin reply of %d members; at most %d", ErrTooLarge, len(m.Members), MaxMembers)
	}
	for i, mb := range m.Members {
		if mb.Node == "" || len(mb.Node) > 64 || len(mb.Addr) > MaxAddrLen {
			return fmt.Errorf("%w: admin reply member %d: node of %d bytes, address of %d bytes: node 1 to 64, address at most %d", ErrMalformed, i, len(mb.Node), len(mb.Addr), MaxAddrLen)
		}
	}
	return nil
}

// rule writes [pattern, rate], or [pattern, rate, true] for a shadow
// rule: an enforcing rule encodes as it did before shadow rules existed,
// so nodes and SDKs of either version read each other's.
func (e *Encoder) rule(r limits.Rule) error {
	if !r.Shadow {
		return firstErr(e.enc.EncodeArrayLen(2), e.enc.EncodeString(r.Pattern), e.rate(r.Rate))
	}
	return firstErr(e.enc.EncodeArrayLen(3), e.enc.EncodeString(r.Pattern), e.rate(r.Rate), e.enc.EncodeBool(true))
}

func (e *Encoder) rate(r limits.Rate) error {
	return firstErr(e.enc.EncodeArrayLen(2), e.enc.EncodeInt(r.Count), e.enc.EncodeInt(int64(r.Window)))
}

func (m *ClientBatch) encode(e *Encoder) error {
	if err := e.enc.EncodeArrayLen(len(m.Items)); err != nil {
		return err
	}
	for _, r := range m.Items {
		if err := firstErr(
			e.enc.EncodeArrayLen(8),
			e.enc.EncodeUint(r.ID),
			e.enc.EncodeUint(uint64(r.Op)),
			e.enc.EncodeString(r.Key),
			e.enc.EncodeInt(r.N),
			e.enc.EncodeInt(r.Want),
			e.enc.EncodeInt(r.Offered),
			e.enc.EncodeUint(r.SettleID),
			e.enc.EncodeInt(r.SettleUsed),
		); err != nil {
			return err
		}
	}
	return nil
}

func (m *ClientReplies) encode(e *Encoder) error {
	if err := e.enc.EncodeArrayLen(len(m.Items)); err != nil {
		return err
	}
	for _, r := range m.Items {
		n := 11
		if r.Decided != 0 {
			n = 12
		}
		if err := firstErr(
			e.enc.EncodeArrayLen(n),
			e.enc.EncodeUint(r.ID),
			e.enc.EncodeUint(uint64(r.Code)),
			e.enc.EncodeString(r.Message),
			e.enc.EncodeBool(r.Allowed),
			e.enc.EncodeUint(r.LeaseID),
			e.enc.EncodeInt(r.Granted),
			e.enc.EncodeInt(int64(r.TTL)),
			e.enc.EncodeInt(r.Remaining),
			e.enc.EncodeInt(int64(r.RetryAfter)),
			e.rate(r.Limit),
			e.enc.EncodeBool(r.Unlimited),
		); err != nil {
			return err
		}
		if n == 12 {
			if err := e.enc.EncodeInt(r.Decided); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *AdminRequest) encode(e *Encoder) error {
	return firstErr(
		e.enc.EncodeUint(m.ID),
		e.enc.EncodeUint(uint64(m.Op)),
		e.rule(m.Rule),
		e.enc.EncodeString(m.Pattern),
		e.enc.EncodeString(m.Node),
		e.enc.EncodeString(m.Addr),
		e.enc.EncodeNil(), // reserved
	)
}

func (m *AdminReply) encode(e *Encoder) error {
	err := firstErr(
		e.enc.EncodeUint(m.ID),
		e.enc.EncodeUint(uint64(m.Code)),
		e.enc.EncodeString(m.Message),
		e.enc.EncodeArrayLen(len(m.Rules)),
	)
	if err != nil {
		return err
	}
	for _, r := range m.Rules {
		if err := e.rule(r); err != nil {
			return err
		}
	}
	if err := firstErr(e.enc.EncodeUint(m.Index), e.enc.EncodeBytes(m.Status), e.enc.EncodeArrayLen(len(m.Members))); err != nil {
		return err
	}
	for _, mb := range m.Members {
		if err := firstErr(e.enc.EncodeArrayLen(2), e.enc.EncodeString(mb.Node), e.enc.EncodeString(mb.Addr)); err != nil {
			return err
		}
	}
	return nil
}

// bool reads a boolean.
func (d *Decoder) bool(field string) (bool, error) {
	v, err := d.dec.DecodeBool()
	if err != nil {
		return false, malformed(field, err)
	}
	return v, nil
}

// duration reads a non-negative duration in nanoseconds.
func (d *Decoder) duration(field string) (time.Duration, error) {
	v, err := d.int(field)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("%w: %s: %d is negative", ErrMalformed, field, v)
	}
	return time.Duration(v), nil
}

// rate reads [count, window ns]; its validity is checked by validate.
func (d *Decoder) rate(field string) (limits.Rate, error) {
	n, err := d.arrayLen(field, 2, 1)
	if err != nil {
		return limits.Rate{}, err
	}
	if n != 2 {
		return limits.Rate{}, fmt.Errorf("%w: %s has %d values, not 2", ErrMalformed, field, n)
	}
	c, err := d.int(field + " count")
	if err != nil {
		return limits.Rate{}, err
	}
	w, err := d.int(field + " window")
	if err != nil {
		return limits.Rate{}, err
	}
	return limits.Rate{Count: c, Window: time.Duration(w)}, nil
}

// rule reads what Encoder.rule writes: [pattern, rate] or [pattern, rate,
// shadow].
func (d *Decoder) rule(field string) (limits.Rule, error) {
	var r limits.Rule
	n, err := d.arrayLen(field, 3, 1)
	if err != nil {
		return r, err
	}
	if n != 2 && n != 3 {
		return r, fmt.Errorf("%w: %s has %d values, not 2 or 3", ErrMalformed, field, n)
	}
	if r.Pattern, err = d.str(field+" pattern", limits.MaxKeyLen); err != nil {
		return r, err
	}
	if r.Rate, err = d.rate(field + " rate"); err != nil {
		return r, err
	}
	if n == 3 {
		if r.Shadow, err = d.bool(field + " shadow"); err != nil {
			return r, err
		}
	}
	return r, nil
}

// fixed reads an array header that must have exactly n values.
func (d *Decoder) fixed(field string, n int) error {
	k, err := d.arrayLen(field, n, 1)
	if err != nil {
		return err
	}
	if k != n {
		return fmt.Errorf("%w: %s has %d values, not %d", ErrMalformed, field, k, n)
	}
	return nil
}

func (d *Decoder) clientBatch(m *ClientBatch) error {
	// A request takes at least 9 bytes: its header, an empty key and seven
	// one-byte values.
	n, err := d.arrayLen("client batch", MaxBatch, 9)
	if err != nil {
		return err
	}
	m.Items = make([]ClientRequest, n)
	for i := range m.Items {
		r := &m.Items[i]
		if err := d.fixed("client request", 8); err != nil {
			return err
		}
		if r.ID, err = d.uint("request id"); err != nil {
			return err
		}
		op, err := d.count("request op", math.MaxUint8)
		if err != nil {
			return err
		}
		r.Op = Op(op)
		if r.Key, err = d.str("request key", limits.MaxKeyLen); err != nil {
			return err
		}
		for _, f := range []struct {
			name string
			v    *int64
		}{{"request n", &r.N}, {"request want", &r.Want}, {"request offered", &r.Offered}} {
			if *f.v, err = d.int(f.name); err != nil {
				return err
			}
		}
		if r.SettleID, err = d.uint("request settle id"); err != nil {
			return err
		}
		if r.SettleUsed, err = d.int("request settle used"); err != nil {
			return err
		}
	}
	return nil
}

func (d *Decoder) clientReplies(m *ClientReplies) error {
	n, err := d.arrayLen("client replies", MaxBatch, 14)
	if err != nil {
		return err
	}
	m.Items = make([]ClientReply, n)
	for i := range m.Items {
		r := &m.Items[i]
		// Eleven values, or twelve with the decision time.
		k, err := d.arrayLen("client reply", 12, 1)
		if err != nil {
			return err
		}
		if k != 11 && k != 12 {
			return fmt.Errorf("%w: client reply has %d values, not 11 or 12", ErrMalformed, k)
		}
		if r.ID, err = d.uint("reply id"); err != nil {
			return err
		}
		c, err := d.count("reply code", math.MaxUint8)
		if err != nil {
			return err
		}
		r.Code = Code(c)
		if r.Message, err = d.str("reply message", MaxMessageLen); err != nil {
			return err
		}
		if r.Allowed, err = d.bool("reply allowed"); err != nil {
			return err
		}
		if r.LeaseID, err = d.uint("reply lease id"); err != nil {
			return err
		}
		if r.Granted, err = d.int("reply granted"); err != nil {
			return err
		}
		if r.TTL, err = d.duration("reply ttl"); err != nil {
			return err
		}
		if r.Remaining, err = d.int("reply remaining"); err != nil {
			return err
		}
		if r.RetryAfter, err = d.duration("reply retry after"); err != nil {
			return err
		}
		if r.Limit, err = d.rate("reply limit"); err != nil {
			return err
		}
		if r.Unlimited, err = d.bool("reply unlimited"); err != nil {
			return err
		}
		if k == 12 {
			if r.Decided, err = d.int("reply decided"); err != nil {
				return err
			}
			if r.Decided <= 0 {
				// Zero is written by leaving the value out: one encoding each.
				return fmt.Errorf("%w: reply decided: %d; a decision time is a Unix time in nanoseconds, after 1970", ErrMalformed, r.Decided)
			}
		}
	}
	return nil
}

func (d *Decoder) adminRequest(m *AdminRequest) error {
	var err error
	if m.ID, err = d.uint("admin id"); err != nil {
		return err
	}
	op, err := d.count("admin op", math.MaxUint8)
	if err != nil {
		return err
	}
	m.Op = AdminOp(op)
	if m.Rule, err = d.rule("admin rule"); err != nil {
		return err
	}
	if m.Pattern, err = d.str("admin pattern", limits.MaxKeyLen); err != nil {
		return err
	}
	if m.Node, err = d.str("admin node", 64); err != nil {
		return err
	}
	if m.Addr, err = d.str("admin address", MaxAddrLen); err != nil {
		return err
	}
	if err := d.dec.DecodeNil(); err != nil {
		return malformed("admin reserved", err)
	}
	return nil
}

func (d *Decoder) adminReply(m *AdminReply) error {
	var err error
	if m.ID, err = d.uint("admin reply id"); err != nil {
		return err
	}
	c, err := d.count("admin reply code", math.MaxUint8)
	if err != nil {
		return err
	}
	m.Code = Code(c)
	if m.Message, err = d.str("admin reply message", MaxMessageLen); err != nil {
		return err
	}
	// A rule takes at least 6 bytes: a header, a one-byte pattern and its
	// header, and a rate of two one-byte numbers with its header.
	n, err := d.arrayLen("admin reply rules", limits.MaxRules, 6)
	if err != nil {
		return err
	}
	if n > 0 {
		m.Rules = make([]limits.Rule, n)
	}
	for i := range m.Rules {
		if m.Rules[i], err = d.rule("admin reply rule"); err != nil {
			return err
		}
	}
	if m.Index, err = d.uint("admin reply index"); err != nil {
		return err
	}
	if err := d.bytes("admin reply status", MaxStatusLen, &m.Status); err != nil {
		return err
	}
	// A member takes at least 3 bytes: a header and two one-byte strings.
	n, err = d.arrayLen("admin reply members", MaxMembers, 3)
	if err != nil {
		return err
	}
	if n > 0 {
		m.Members = make([]Member, n)
	}
	for i := range m.Members {
		if err := d.fixed("admin reply member", 2); err != nil {
			return err
		}
		if m.Members[i].Node, err = d.str("admin reply member node", 64); err != nil {
			return err
		}
		if m.Members[i].Addr, err = d.str("admin reply member addr", MaxAddrLen); err != nil {
			return err
		}
	}
	return nil
}

// bytes reads a msgpack bin of at most max bytes (nil for an empty one).
func (d *Decoder) bytes(field string, max int, out *[]byte) error {
	n, err := d.dec.DecodeBytesLen()
	if err != nil {
		return malformed(field, err)
	}
	switch {
	case n < 0:
		*out = nil
		return nil
	case n > max:
		return fmt.Errorf("%w: %s of %d bytes; at most %d are allowed", ErrTooLarge, field, n, max)
	case n > d.r.Len():
		return fmt.Errorf("%w: %s of %d bytes: only %d left", ErrMalformed, field, n, d.r.Len())
	}
	if n > 0 {
		off := len(d.body) - d.r.Len()
		*out = append([]byte(nil), d.body[off:off+n]...)
		if _, err := d.r.Seek(int64(n), 1); err != nil {
			return malformed(field, err)
		}
	}
	return nil
}
