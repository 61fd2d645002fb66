package wire

import (
	"fmt"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
)

// Version is the body format this package reads and writes.
const Version = 1

// Type identifies a message in a body's header.
type Type uint8

// Message types. 1 to 31 are for node-to-node streams; 32 and up are
// reserved for client messages.
const (
	TypeHello Type = 1
	TypeSync  Type = 2
	// FirstClientType is the first type number of client messages.
	FirstClientType Type = 32
)

// Caps on fields, checked by encoder and decoder alike.
const (
	// MaxClusterIDLen is the longest cluster ID, in bytes.
	MaxClusterIDLen = 64
	// MaxAddrLen is the longest advertised address, in bytes.
	MaxAddrLen = 256
)

// Message is a message that can be encoded. The set of messages is closed:
// only this package's types implement it.
type Message interface {
	// Type returns the message's type number.
	Type() Type
	// validate checks the rules of the message.
	validate() error
	// fields is the number of msgpack values after the header.
	fields() int
	// encode writes the message's fields.
	encode(e *Encoder) error
}

// Hello is the first frame on a peer sync stream: who the sender is.
type Hello struct {
	// ClusterID names the cluster; a peer of another cluster is refused.
	// 1 to MaxClusterIDLen bytes of printable ASCII without spaces.
	ClusterID string
	// Node is the sender's node ID (crdt.ValidateNodeID).
	Node string
	// Incarnation is the sender's process incarnation, non-zero.
	Incarnation uint64
	// Addr is the address the sender accepts connections on, 1 to
	// MaxAddrLen bytes of printable ASCII without spaces.
	Addr string
}

// Type returns TypeHello.
func (*Hello) Type() Type  { return TypeHello }
func (*Hello) fields() int { return 4 }

func (m *Hello) validate() error {
	if err := checkText("cluster ID", m.ClusterID, MaxClusterIDLen); err != nil {
		return err
	}
	if err := (crdt.OriginID{Node: m.Node, Incarnation: m.Incarnation}).Validate(); err != nil {
		return fmt.Errorf("%w: hello: %w", ErrMalformed, err)
	}
	return checkText("address", m.Addr, MaxAddrLen)
}

// checkText checks a 1 to max bytes field of printable ASCII without
// spaces.
func checkText(field, s string, max int) error {
	if err := limits.CheckPrintable(s, max); err != nil {
		return fmt.Errorf("%w: %s %v", ErrMalformed, field, err)
	}
	return nil
}

// Sync is one frame of a peer sync stream, sent every sync interval: a
// delta (or one part of a split delta) and the acknowledgement of what the
// sender has merged from the receiver. The sender's asOf travels in the
// delta, as the state of its own origin.
type Sync struct {
	// Seq numbers the frames on this stream, from 1; a receiver rejects a
	// frame whose Seq is not above the last one it accepted (a replay).
	Seq uint64
	// Ack is the receiver's delta interval up to which the sender holds
	// everything (crdt.Store.AckFor); 0 for none.
	Ack uint64
	// Offset is the sender's estimate, in nanoseconds, of the receiver's
	// node time minus its own as seen through the receiver's frames: their
	// asOf minus the sender's time at receipt, which is the true offset minus
	// the frames' one-way delay (the largest of recent samples, the one with
	// the least delay); 0 when it has none. The receiver, holding the same
	// estimate the other way, takes half their difference: symmetric delays
	// cancel, as in NTP (design.md §2, clock alignment). Within ±MaxOffset.
	Offset int64
	// Delta is the delta or delta part; it must be valid
	// (crdt.Delta.Validate).
	Delta crdt.Delta
	// Misses names the members the sender has not heard directly for a
	// while (reachability gossip, design.md §7 "Bridges"): the receiver
	// relays to it what it knows of those members, so that a partition that
	// is not transitive (the receiver hears both sides, the sender one) does
	// not make the sender reclaim a member that is still admitting. Empty in
	// a fully connected cluster. At most MaxMisses names.
	Misses []string
}

// MaxMisses bounds Sync.Misses.
const MaxMisses = crdt.MaxDeltaOrigins

// MaxOffset bounds Sync.Offset: a day, far beyond any clock worth aligning.
const MaxOffset = int64(24 * 60 * 60 * 1e9)

// Type returns TypeSync.
func (*Sync) Type() Type  { return TypeSync }
func (*Sync) fields() int { return 13 }

func (m *Sync) validate() error {
	if len(m.Misses) > MaxMisses {
		return fmt.Errorf("%w: sync misses %d members, at most %d", ErrTooLarge, len(m.Misses), MaxMisses)
	}
	for _, id := range m.Misses {
		if err := checkText("sync missed member", id, crdt.MaxNodeIDLen); err != nil {
			return err
		}
	}
	if err := m.Delta.Validate(); err != nil {
		return fmt.Errorf("%w: sync delta: %w", ErrMalformed, err)
	}
	return nil
}
