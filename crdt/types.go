package crdt

import (
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/limits"
)

// Limits of the data model. A decoder checks lengths against these before
// allocating (QuotaMesh's wire decoder does); Delta.Validate checks them
// again.
const (
	// MaxNodeIDLen is the longest node ID, in bytes.
	MaxNodeIDLen = 64
	// MaxTime is the largest node time (ns since the Unix epoch, about the
	// year 2116) that an asOf may hold. Larger values are nonsense, and
	// bounding them keeps every time sum in int64.
	MaxTime = int64(1) << 62
	// MaxEpoch is the largest slot number, the slot of MaxTime.
	MaxEpoch = MaxTime / int64(limits.Slot)
	// MaxAge is the largest relayed age an origin state may carry. A relayer
	// forgets a silent origin long before (Config.ForgetAfter).
	MaxAge = int64(24 * time.Hour)
	// MaxLeadSlots is how far an entry's epoch may lie beyond the slot of its
	// origin's asOf in the same delta. An origin records its open slot and
	// then reports asOf, so honest deltas lead by at most one slot; the
	// margin absorbs a stalled sync loop. Bounding the lead bounds the memory
	// a series can hold (Config.Horizon plus MaxLeadSlots slots).
	MaxLeadSlots = 10
	// MaxDemandSlots is the longest demand period a view reads (View.Demand):
	// offered counts are kept for the slots such a view may read only.
	MaxDemandSlots = 10
	// MaxDeltaEntries is the most entries one delta (one frame) may carry.
	MaxDeltaEntries = 100_000
	// MaxDeltaOrigins is the most origin states one delta may carry.
	MaxDeltaOrigins = 10_000
	// MaxParts is the most parts one split delta may have.
	MaxParts = 1 << 20
)

// OriginID names one process incarnation of a node: the only writer of its
// entries. A node draws a fresh random non-zero Incarnation at every start,
// so a node restarted after a crash is a new origin and never reuses, loses
// or double-counts the entries of its previous life.
type OriginID struct {
	// Node is the node's ID (ValidateNodeID).
	Node string
	// Incarnation is drawn at random, non-zero, when the process starts.
	Incarnation uint64
}

// String returns "node#incarnation" with the incarnation in hex.
func (id OriginID) String() string { return fmt.Sprintf("%s#%x", id.Node, id.Incarnation) }

// Validate reports whether id can name an origin: a valid node ID (see
// ValidateNodeID) and a non-zero incarnation (zero means "unset").
func (id OriginID) Validate() error {
	if err := ValidateNodeID(id.Node); err != nil {
		return err
	}
	if id.Incarnation == 0 {
		return fmt.Errorf("%w: %q has incarnation 0; incarnations are random and non-zero", ErrInvalidOrigin, clip(id.Node))
	}
	return nil
}

// ValidateNodeID reports whether id is a valid node ID: 1 to MaxNodeIDLen
// bytes of printable ASCII without spaces ('!' to '~'), the same alphabet as
// keys.
func ValidateNodeID(id string) error {
	if err := limits.CheckPrintable(id, MaxNodeIDLen); err != nil {
		return fmt.Errorf("%w: node ID %q %v", ErrInvalidOrigin, clip(id), err)
	}
	return nil
}

// clip keeps error messages short when a caller passes a huge string.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// SlotCounts are one slot's counts as the origin's window holds them.
type SlotCounts struct {
	// Epoch is the slot number: node time / limits.Slot. 1 to MaxEpoch.
	Epoch int64
	// Admitted is how many requests the slot admitted.
	Admitted uint32
	// Offered is how many requests were offered to the slot, admitted or
	// not. It is never below Admitted (RecordOwn raises it if needed).
	Offered uint32
}

// Delta is one message of the anti-entropy protocol: a set of entries and
// the origin states they belong to. A delta is a fragment of state: merging
// it twice, or merging an older one after a newer one, changes nothing,
// because every value is absolute and merge takes the maximum.
//
// A normal delta (Full false) carries its sender's own origin only: its
// asOf (also when there are no entries, as a heartbeat) and its entries
// changed since the receiver's last acknowledgement. A full delta carries
// every origin the sender knows, with their ages, and all their entries.
// A delta too large for one frame is split into Parts parts, each a valid
// delta on its own with the same Seq; the receiver acknowledges Seq once it
// has merged every part in order and held everything up to Basis before
// (Store.AckFor).
type Delta struct {
	// From is the sending origin.
	From OriginID
	// Seq is the sender's delta interval this delta is complete up to; the
	// receiver echoes it back as its acknowledgement.
	Seq uint64
	// Basis is the interval after which a normal delta's changes start: the
	// delta brings a receiver up to Seq only if the receiver already held
	// everything up to Basis. 0 for a full state, which needs nothing.
	// Basis equal to Seq marks a relay (Store.RelayFor): other origins'
	// state passed on to a peer that cannot hear them, which never
	// advances an acknowledgement.
	Basis uint64
	// Full marks a full state rather than a delta since Basis.
	Full bool
	// Part is this part's index, 0 to Parts-1.
	Part int
	// Parts is how many parts the delta was split into, 1 to MaxParts.
	Parts int
	// Origins are the origin states this delta carries; From is always one
	// of them, with Age 0. At most MaxDeltaOrigins, no ID twice.
	Origins []OriginState
	// Entries are the slot counts, at most MaxDeltaEntries. Entries with the
	// same key are best kept adjacent: the wire encoding sends a key once per
	// run of entries that share it.
	Entries []Entry
	// Quotas are quota registers, at most MaxDeltaEntries: a normal delta
	// carries those of its sender that changed since Basis, a full state
	// every register it holds.
	Quotas []QuotaEntry
}

// QuotaEntry is one origin's quota register for one key: the quota the
// origin announced for the key with sequence number Seq, in slot Epoch.
// Only the origin writes its registers and it numbers its announcements, so
// registers join by taking the higher Seq: a quota may fall, which a plain
// G-Counter could not say, and merging stays a join.
type QuotaEntry struct {
	// Origin is an index into the delta's Origins.
	Origin int
	// Key is a valid key (limits.ValidateKey).
	Key string
	// Epoch is the slot, in the origin's own numbering, 1 to MaxEpoch and at
	// most MaxLeadSlots beyond the slot of the origin's AsOf.
	Epoch int64
	// Seq numbers the origin's announcements, from 1; higher is later.
	Seq uint64
	// Quota is the cap the origin put on its own window count.
	Quota uint32
}

// OriginState is what a delta says about one origin.
type OriginState struct {
	// ID names the origin.
	ID OriginID
	// AsOf is the origin's node time up to which its counts are complete,
	// 0 to MaxTime. It only grows.
	AsOf int64
	// Age is how long ago, in nanoseconds of the sender's time, the sender
	// learned this AsOf (0 for the sender's own origin; for a relayed
	// origin, the relayer's own age of it). 0 to MaxAge.
	Age int64
}

// Entry is one slot of one origin for one key.
type Entry struct {
	// Origin is an index into the delta's Origins.
	Origin int
	// Key is a valid key (limits.ValidateKey).
	Key string
	// Epoch is the slot, in the origin's own slot numbering. 1 to
	// MaxEpoch, and at most MaxLeadSlots beyond the slot of the origin's
	// AsOf in the same delta.
	Epoch int64
	// Admitted and Offered are the slot's counts; Admitted <= Offered.
	Admitted, Offered uint32
}

// IsRelay reports whether d is a relay (Store.RelayFor): a normal delta
// whose basis is its own interval.
func (d *Delta) IsRelay() bool { return !d.Full && d.Basis == d.Seq }

// Validate checks every rule that does not depend on a receiver's state: the
// ranges of every field, that origin indices point into Origins, that From
// is among Origins with Age 0 (a normal delta may carry other origins: a
// relaying delta, Store.DeltaForRelaying), and that no entry is ahead of its origin's asOf by more than MaxLeadSlots.
// Errors wrap ErrInvalidDelta or ErrInvalidOrigin and name the field.
func (d *Delta) Validate() error {
	if err := d.From.Validate(); err != nil {
		return fmt.Errorf("%w: from: %w", ErrInvalidDelta, err)
	}
	if d.Parts < 1 || d.Parts > MaxParts {
		return fmt.Errorf("%w: parts %d out of range [1, %d]", ErrInvalidDelta, d.Parts, MaxParts)
	}
	if d.Full != (d.Basis == 0) || d.Basis > d.Seq {
		return fmt.Errorf("%w: basis %d with seq %d and full %v; a full state has basis 0, a normal delta a basis from 1 to its seq", ErrInvalidDelta, d.Basis, d.Seq, d.Full)
	}
	if d.Part < 0 || d.Part >= d.Parts {
		return fmt.Errorf("%w: part %d out of range [0, %d)", ErrInvalidDelta, d.Part, d.Parts)
	}
	if len(d.Origins) == 0 || len(d.Origins) > MaxDeltaOrigins {
		return fmt.Errorf("%w: %d origins; 1 to %d are allowed", ErrInvalidDelta, len(d.Origins), MaxDeltaOrigins)
	}
	if len(d.Entries) > MaxDeltaEntries {
		return fmt.Errorf("%w: %d entries; at most %d are allowed", ErrInvalidDelta, len(d.Entries), MaxDeltaEntries)
	}
	fromAt := -1
	var seen map[OriginID]struct{}
	if len(d.Origins) > 8 {
		seen = make(map[OriginID]struct{}, len(d.Origins))
	}
	for i := range d.Origins {
		o := &d.Origins[i]
		if err := o.ID.Validate(); err != nil {
			return fmt.Errorf("%w: origins[%d]: %w", ErrInvalidDelta, i, err)
		}
		if o.AsOf < 0 || o.AsOf > MaxTime {
			return fmt.Errorf("%w: origins[%d] %v: asOf %d out of range [0, %d]", ErrInvalidDelta, i, o.ID, o.AsOf, MaxTime)
		}
		if o.Age < 0 || o.Age > MaxAge {
			return fmt.Errorf("%w: origins[%d] %v: age %d out of range [0, %d]", ErrInvalidDelta, i, o.ID, o.Age, MaxAge)
		}
		if seen != nil {
			if _, dup := seen[o.ID]; dup {
				return fmt.Errorf("%w: origins[%d] %v appears twice", ErrInvalidDelta, i, o.ID)
			}
			seen[o.ID] = struct{}{}
		} else {
			for j := 0; j < i; j++ {
				if d.Origins[j].ID == o.ID {
					return fmt.Errorf("%w: origins[%d] %v appears twice", ErrInvalidDelta, i, o.ID)
				}
			}
		}
		if o.ID == d.From {
			fromAt = i
			if o.Age != 0 {
				return fmt.Errorf("%w: origins[%d]: the sender's own state has age %d; it must be 0", ErrInvalidDelta, i, o.Age)
			}
		}
	}
	if fromAt < 0 {
		return fmt.Errorf("%w: the sender %v is not among the delta's origins", ErrInvalidDelta, d.From)
	}
	if len(d.Quotas) > MaxDeltaEntries {
		return fmt.Errorf("%w: %d quotas; at most %d are allowed", ErrInvalidDelta, len(d.Quotas), MaxDeltaEntries)
	}
	for i := range d.Quotas {
		q := &d.Quotas[i]
		if q.Origin < 0 || q.Origin >= len(d.Origins) {
			return fmt.Errorf("%w: quotas[%d]: origin index %d out of range [0, %d)", ErrInvalidDelta, i, q.Origin, len(d.Origins))
		}
		if err := limits.ValidateKey(q.Key); err != nil {
			return fmt.Errorf("%w: quotas[%d]: %w", ErrInvalidDelta, i, err)
		}
		if q.Seq == 0 {
			return fmt.Errorf("%w: quotas[%d] key %q: sequence number 0; announcements are numbered from 1", ErrInvalidDelta, i, clip(q.Key))
		}
		if q.Epoch < 1 || q.Epoch > MaxEpoch {
			return fmt.Errorf("%w: quotas[%d] key %q: epoch %d out of range [1, %d]", ErrInvalidDelta, i, clip(q.Key), q.Epoch, MaxEpoch)
		}
		if lead := slotOf(d.Origins[q.Origin].AsOf) + MaxLeadSlots; q.Epoch > lead {
			return fmt.Errorf("%w: quotas[%d] key %q: epoch %d is ahead of its origin's asOf slot by more than %d", ErrInvalidDelta, i, clip(q.Key), q.Epoch, MaxLeadSlots)
		}
	}
	lastKey := ""
	for i := range d.Entries {
		e := &d.Entries[i]
		if e.Origin < 0 || e.Origin >= len(d.Origins) {
			return fmt.Errorf("%w: entries[%d]: origin index %d out of range [0, %d)", ErrInvalidDelta, i, e.Origin, len(d.Origins))
		}
		if e.Key != lastKey || i == 0 {
			if err := limits.ValidateKey(e.Key); err != nil {
				return fmt.Errorf("%w: entries[%d]: %w", ErrInvalidDelta, i, err)
			}
			lastKey = e.Key
		}
		if e.Epoch < 1 || e.Epoch > MaxEpoch {
			return fmt.Errorf("%w: entries[%d] key %q: epoch %d out of range [1, %d]", ErrInvalidDelta, i, clip(e.Key), e.Epoch, MaxEpoch)
		}
		if lead := slotOf(d.Origins[e.Origin].AsOf) + MaxLeadSlots; e.Epoch > lead {
			return fmt.Errorf("%w: entries[%d] key %q: epoch %d is more than %d slots ahead of its origin's asOf slot %d", ErrInvalidDelta, i, clip(e.Key), e.Epoch, MaxLeadSlots, slotOf(d.Origins[e.Origin].AsOf))
		}
		if e.Admitted > e.Offered {
			return fmt.Errorf("%w: entries[%d] key %q epoch %d: admitted %d exceeds offered %d", ErrInvalidDelta, i, clip(e.Key), e.Epoch, e.Admitted, e.Offered)
		}
	}
	return nil
}

// slotOf returns the slot of node time t (t >= 0).
func slotOf(t int64) int64 { return t / int64(limits.Slot) }
