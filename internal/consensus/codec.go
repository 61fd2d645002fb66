package consensus

import (
	"bytes"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/quotamesh/quotamesh/limits"
)

// Everything this package writes (log entries, snapshots, forwarded requests
// and their responses) is msgpack with a version field first. Decoders check
// the size of their input before decoding and the version and operation after,
// so bytes from disk or from a peer never panic, never allocate more than a
// small multiple of their own size, and never reach the table unvalidated.
const (
	// formatVersion is the version written in every encoding. A decoder
	// refuses any other.
	formatVersion = 1

	// maxCommandBytes bounds a log entry: one rule and a few integers.
	maxCommandBytes = 4 << 10
	// maxMessageBytes bounds a forwarded request or response.
	maxMessageBytes = 8 << 10
	// maxSnapshotBytes bounds a snapshot: MaxRules rules of at most ~300
	// bytes, plus the dedup window.
	maxSnapshotBytes = 16 << 20
)

// op is an operation. Values are part of the log and wire formats: never
// renumber them.
type op uint8

const (
	opInvalid op = iota
	// Log entries (commands).
	opSet
	opDelete
	// Forwarded requests besides opSet and opDelete.
	opSync   // linearizable read barrier: the leader's applied index
	opJoin   // add a member
	opLeave  // remove a member
	opStatus // health probe, answered by any member
	// A log entry and a forwarded request: reset the keys of Pattern from
	// slot Floor on (limits.Reset).
	opReset
)

func (o op) String() string {
	switch o {
	case opSet:
		return "set"
	case opDelete:
		return "delete"
	case opSync:
		return "sync"
	case opJoin:
		return "join"
	case opLeave:
		return "leave"
	case opStatus:
		return "status"
	case opReset:
		return "reset"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// wireRule is a rule as this package writes it. limits.Rate marshals itself
// as text ("1000/s") and refuses invalid rates while decoding; spelling the
// fields out keeps the format independent of that, and lets the leader
// refuse a bad rule from a peer with ErrInvalidRate rather than a decoding
// error.
//
// Shadow came later, within format version 1: it is omitted when false, so
// an enforcing rule encodes byte for byte as before, and log entries and
// snapshots written before it existed decode as enforcing rules. A node of
// the earlier version ignores the field (msgpack skips unknown keys) and so
// would enforce a shadow rule: upgrade every node before setting one.
type wireRule struct {
	Pattern string        `msgpack:"p"`
	Count   int64         `msgpack:"c"`
	Window  time.Duration `msgpack:"w"`
	Shadow  bool          `msgpack:"s,omitempty"`
}

func toWire(r limits.Rule) wireRule {
	return wireRule{Pattern: r.Pattern, Count: r.Rate.Count, Window: r.Rate.Window, Shadow: r.Shadow}
}

func (w wireRule) rule() limits.Rule {
	return limits.Rule{Pattern: w.Pattern, Rate: limits.Rate{Count: w.Count, Window: w.Window}, Shadow: w.Shadow}
}

func toWireRules(rules []limits.Rule) []wireRule {
	out := make([]wireRule, len(rules))
	for i, r := range rules {
		out[i] = toWire(r)
	}
	return out
}

// command is a Raft log entry: one change to the limit table.
type command struct {
	V  uint8 `msgpack:"v"`
	Op op    `msgpack:"o"`
	// ID identifies the request across retries (random, nonzero); the state
	// machine applies each ID at most once within its dedup window.
	ID uint64 `msgpack:"i"`
	// Rule is set for opSet.
	Rule wireRule `msgpack:"r"`
	// Pattern is set for opDelete and opReset.
	Pattern string `msgpack:"p"`
	// Floor is set for opReset: the first slot that counts. Omitted
	// otherwise, so set and delete entries encode as before resets existed.
	Floor int64 `msgpack:"e,omitempty"`
}

func encodeCommand(c command) ([]byte, error) {
	c.V = formatVersion
	return msgpack.Marshal(&c)
}

func decodeCommand(b []byte) (command, error) {
	var c command
	if len(b) > maxCommandBytes {
		return c, fmt.Errorf("%w: command of %d bytes; at most %d are allowed", ErrBadRequest, len(b), maxCommandBytes)
	}
	if err := checkShape(b); err != nil {
		return c, fmt.Errorf("%w: command: %v", ErrBadRequest, err)
	}
	if err := msgpack.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: command: %v", ErrBadRequest, err)
	}
	if c.V != formatVersion {
		return c, fmt.Errorf("%w: command version %d; this node reads version %d", ErrBadRequest, c.V, formatVersion)
	}
	if c.Op != opSet && c.Op != opDelete && c.Op != opReset {
		return c, fmt.Errorf("%w: command operation %v", ErrBadRequest, c.Op)
	}
	return c, nil
}

// recent is one entry of the state machine's dedup window: the outcome of
// applying the request with this ID.
type recent struct {
	ID    uint64 `msgpack:"i"`
	Index uint64 `msgpack:"x"`
	Code  code   `msgpack:"c"`
	Msg   string `msgpack:"m"`
}

// snapshot is the whole state machine: the table's rules and the dedup
// window, which every node must hold identically so that a retried request is
// skipped on every node or on none.
type snapshot struct {
	V uint8 `msgpack:"v"`
	// Index is the log index of the last command applied.
	Index  uint64     `msgpack:"x"`
	Rules  []wireRule `msgpack:"r"`
	Recent []recent   `msgpack:"d"`
	// Resets are the table's resets, omitted when there are none (so a
	// snapshot without any encodes as before resets existed).
	Resets []wireReset `msgpack:"z,omitempty"`
}

// wireReset is a limits.Reset as this package writes it.
type wireReset struct {
	Pattern string `msgpack:"p"`
	Floor   int64  `msgpack:"e"`
}

func toWireResets(rs []limits.Reset) []wireReset {
	if len(rs) == 0 {
		return nil
	}
	out := make([]wireReset, len(rs))
	for i, r := range rs {
		out[i] = wireReset{Pattern: r.Pattern, Floor: r.Floor}
	}
	return out
}

func encodeSnapshot(s snapshot) ([]byte, error) {
	s.V = formatVersion
	return msgpack.Marshal(&s)
}

func decodeSnapshot(b []byte) (snapshot, *limits.Table, error) {
	var s snapshot
	if len(b) > maxSnapshotBytes {
		return s, nil, fmt.Errorf("snapshot of %d bytes; at most %d are allowed", len(b), maxSnapshotBytes)
	}
	if err := checkShape(b); err != nil {
		return s, nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := msgpack.Unmarshal(b, &s); err != nil {
		return s, nil, fmt.Errorf("snapshot: %w", err)
	}
	if s.V != formatVersion {
		return s, nil, fmt.Errorf("snapshot version %d; this node reads version %d", s.V, formatVersion)
	}
	if len(s.Recent) > dedupWindow {
		return s, nil, fmt.Errorf("snapshot dedup window of %d entries; at most %d are allowed", len(s.Recent), dedupWindow)
	}
	if len(s.Rules) > limits.MaxRules {
		return s, nil, fmt.Errorf("snapshot of %d rules; at most %d are allowed", len(s.Rules), limits.MaxRules)
	}
	rules := make([]limits.Rule, len(s.Rules))
	for i, w := range s.Rules {
		rules[i] = w.rule()
	}
	t, err := limits.NewTable(rules...)
	if err != nil {
		return s, nil, fmt.Errorf("snapshot table: %w", err)
	}
	if len(s.Resets) > 0 {
		resets := make([]limits.Reset, len(s.Resets))
		for i, w := range s.Resets {
			resets[i] = limits.Reset{Pattern: w.Pattern, Floor: w.Floor}
		}
		if t, err = t.WithResets(resets); err != nil {
			return s, nil, fmt.Errorf("snapshot resets: %w", err)
		}
	}
	return s, t, nil
}

// request is a forwarded operation.
type request struct {
	V  uint8  `msgpack:"v"`
	Op op     `msgpack:"o"`
	ID uint64 `msgpack:"i"`
	// Rule for opSet; Pattern for opDelete and opReset; Floor for opReset;
	// Server for opJoin and opLeave.
	Rule    wireRule `msgpack:"r"`
	Pattern string   `msgpack:"p"`
	Floor   int64    `msgpack:"e,omitempty"`
	Server  Server   `msgpack:"s"`
	// Hops counts how many times the request was passed on; a node that
	// is not the leader passes it to the leader it knows only if Hops is
	// below maxHops, so stale leader hints cannot make it loop.
	Hops uint8 `msgpack:"h"`
	// Budget is what remained of the caller's deadline when it was sent (0:
	// none); the receiver stops working on the request after it.
	Budget time.Duration `msgpack:"b"`
}

// maxHops bounds how many nodes may pass a request on.
const maxHops = 1

func encodeRequest(r request) ([]byte, error) {
	r.V = formatVersion
	return msgpack.Marshal(&r)
}

func decodeRequest(b []byte) (request, error) {
	var r request
	if len(b) > maxMessageBytes {
		return r, fmt.Errorf("%w: request of %d bytes; at most %d are allowed", ErrBadRequest, len(b), maxMessageBytes)
	}
	if err := checkShape(b); err != nil {
		return r, fmt.Errorf("%w: request: %v", ErrBadRequest, err)
	}
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: request: %v", ErrBadRequest, err)
	}
	if r.V != formatVersion {
		return r, fmt.Errorf("%w: request version %d; this node reads version %d", ErrBadRequest, r.V, formatVersion)
	}
	switch r.Op {
	case opSet, opDelete, opSync, opJoin, opLeave, opStatus, opReset:
	default:
		return r, fmt.Errorf("%w: request operation %v", ErrBadRequest, r.Op)
	}
	if r.Budget < 0 {
		return r, fmt.Errorf("%w: request budget %v is negative", ErrBadRequest, r.Budget)
	}
	return r, nil
}

// status is a member's answer to a health probe.
type status struct {
	ID        string `msgpack:"i"`
	State     string `msgpack:"s"`
	LeaderID  string `msgpack:"l"`
	LastIndex uint64 `msgpack:"x"`
	Applied   uint64 `msgpack:"a"`
}

// response answers a request. Code and Msg carry an error (see errorOf);
// Index is the log index of the change for opSet, opDelete and opReset and the
// leader's applied index for opSync; Leader is the leader the answering node
// knows, as a hint when Code is codeNotLeader.
type response struct {
	V      uint8  `msgpack:"v"`
	Code   code   `msgpack:"c"`
	Msg    string `msgpack:"m"`
	Index  uint64 `msgpack:"x"`
	Leader Server `msgpack:"l"`
	Status status `msgpack:"t"`
}

func (r response) err() error { return errorOf(r.Code, r.Msg) }

func encodeResponse(r response) []byte {
	r.V = formatVersion
	if len(r.Msg) > maxMessageBytes/2 {
		r.Msg = r.Msg[:maxMessageBytes/2]
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := enc.Encode(&r); err != nil {
		// Every field is a plain value; encoding cannot fail. Say so loudly
		// rather than send nothing.
		panic(fmt.Sprintf("consensus: encoding a response: %v", err))
	}
	return buf.Bytes()
}

func decodeResponse(b []byte) (response, error) {
	var r response
	if len(b) > maxMessageBytes {
		return r, fmt.Errorf("%w: response of %d bytes; at most %d are allowed", ErrBadRequest, len(b), maxMessageBytes)
	}
	if err := checkShape(b); err != nil {
		return r, fmt.Errorf("%w: response: %v", ErrBadRequest, err)
	}
	if err := msgpack.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: response: %v", ErrBadRequest, err)
	}
	if r.V != formatVersion {
		return r, fmt.Errorf("%w: response version %d; this node reads version %d", ErrBadRequest, r.V, formatVersion)
	}
	return r, nil
}

// checkShape walks the first msgpack value in b without decoding it and
// refuses any header that claims more than b holds: a string, binary or
// extension longer than the bytes left, or an array or map with more
// elements than bytes left (every element takes at least one). msgpack's
// decoder sizes slices from the header before reading their elements, so a
// five-byte array header claiming 2^32 rules would otherwise allocate
// gigabytes. After checkShape, decoding allocates a small multiple of
// len(b).
func checkShape(b []byte) error {
	pending := 1 // values still to read
	i := 0
	need := func(n uint64) error {
		if n > uint64(len(b)-i) {
			return fmt.Errorf("msgpack header at byte %d claims %d bytes or elements; only %d bytes follow", i, n, len(b)-i)
		}
		return nil
	}
	// size reads an n-byte big-endian length at b[i:].
	size := func(n int) (uint64, error) {
		if err := need(uint64(n)); err != nil {
			return 0, err
		}
		var v uint64
		for _, c := range b[i : i+n] {
			v = v<<8 | uint64(c)
		}
		i += n
		return v, nil
	}
	for pending > 0 {
		if i >= len(b) {
			return fmt.Errorf("msgpack value truncated at byte %d", i)
		}
		c := b[i]
		i++
		pending--
		var (
			skip     uint64 // bytes of payload
			items    uint64 // elements of a container
			lenBytes int    // width of an explicit length
			err      error
		)
		switch {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			items = 2 * uint64(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			items = uint64(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			skip = uint64(c & 0x1f)
		case c == 0xc4, c == 0xd9: // bin8, str8
			lenBytes = 1
		case c == 0xc5, c == 0xda: // bin16, str16
			lenBytes = 2
		case c == 0xc6, c == 0xdb: // bin32, str32
			lenBytes = 4
		case c == 0xc7, c == 0xc8, c == 0xc9: // ext8/16/32: length, then a type byte
			if skip, err = size(1 << (c - 0xc7)); err != nil {
				return err
			}
			skip++
		case c == 0xca, c == 0xce, c == 0xd2: // float32, uint32, int32
			skip = 4
		case c == 0xcb, c == 0xcf, c == 0xd3: // float64, uint64, int64
			skip = 8
		case c == 0xcc, c == 0xd0: // uint8, int8
			skip = 1
		case c == 0xcd, c == 0xd1: // uint16, int16
			skip = 2
		case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16: a type byte, then data
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc, c == 0xdd: // array16, array32
			if items, err = size(2 << (c - 0xdc)); err != nil {
				return err
			}
		case c == 0xde, c == 0xdf: // map16, map32
			if items, err = size(2 << (c - 0xde)); err != nil {
				return err
			}
			items *= 2
		default: // 0xc1 is never used
			return fmt.Errorf("msgpack code 0x%02x at byte %d is not valid", c, i-1)
		}
		if lenBytes > 0 {
			if skip, err = size(lenBytes); err != nil {
				return err
			}
		}
		if err := need(skip); err != nil {
			return err
		}
		i += int(skip)
		if err := need(items); err != nil {
			return err
		}
		pending += int(items)
	}
	return nil
}
