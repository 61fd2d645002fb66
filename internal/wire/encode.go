package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Encoder encodes messages into byte slices. Its zero value is not usable;
// call NewEncoder. An Encoder is not safe for concurrent use; reuse one per
// goroutine to encode without allocating.
type Encoder struct {
	w   sliceWriter
	enc *msgpack.Encoder
}

// sliceWriter appends to a byte slice; msgpack writes to it directly.
type sliceWriter struct{ b []byte }

func (w *sliceWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *sliceWriter) WriteByte(c byte) error      { w.b = append(w.b, c); return nil }

// NewEncoder returns an Encoder.
func NewEncoder() *Encoder {
	e := &Encoder{}
	e.enc = msgpack.NewEncoder(&e.w)
	return e
}

// AppendBody appends m's body (no frame prefix) to dst. It validates m first
// and refuses a body over MaxFrame bytes; on error dst is returned
// unchanged.
func (e *Encoder) AppendBody(dst []byte, m Message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return dst, fmt.Errorf("encode %T: %w", m, err)
	}
	start := len(dst)
	e.w.b = dst
	err := e.header(m)
	if err == nil {
		err = m.encode(e)
	}
	out := e.w.b
	e.w.b = nil
	if err != nil {
		return dst, fmt.Errorf("encode %T: %w", m, err)
	}
	if n := len(out) - start; n > MaxFrame {
		return dst, fmt.Errorf("%w: %T body of %d bytes; at most %d fit a frame", ErrTooLarge, m, n, MaxFrame)
	}
	return out, nil
}

// Append appends m to dst as one frame: length prefix and body.
func (e *Encoder) Append(dst []byte, m Message) ([]byte, error) {
	start := len(dst)
	out, err := e.AppendBody(append(dst, make([]byte, maxPrefix)...), m)
	if err != nil {
		return dst[:start], err
	}
	n := len(out) - start - maxPrefix
	var prefix [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(prefix[:], uint64(n))
	copy(out[start:], prefix[:k])
	if k < maxPrefix {
		out = append(out[:start+k], out[start+maxPrefix:]...)
	}
	return out, nil
}

// Append appends m to dst as one frame, with a temporary Encoder.
func Append(dst []byte, m Message) ([]byte, error) { return NewEncoder().Append(dst, m) }

// Encode returns m's body, with a temporary Encoder.
func Encode(m Message) ([]byte, error) { return NewEncoder().AppendBody(nil, m) }

func (e *Encoder) header(m Message) error {
	return firstErr(
		e.enc.EncodeArrayLen(2+m.fields()),
		e.enc.EncodeUint(Version),
		e.enc.EncodeUint(uint64(m.Type())),
	)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *Hello) encode(e *Encoder) error {
	return firstErr(
		e.enc.EncodeString(m.ClusterID),
		e.enc.EncodeString(m.Node),
		e.enc.EncodeUint(m.Incarnation),
		e.enc.EncodeString(m.Addr),
	)
}

// flagFull marks a full state in a Sync's flags.
const flagFull = 1

// encode writes a Sync as
//
//	seq, ack, offset, delta seq, basis gap, flags, part, parts,
//	[[node, incarnation, asOf, age]...], from,
//	[[key, (origin, epoch delta, admitted, offered)...]...],
//	[[key, origin, epoch, seq, quota]...], [missed member...]
//
// The sender (from) is sent as its index among the origin states, and the
// basis of a normal delta as its distance below the delta's seq (0 for a
// full state). Entries are grouped in runs of adjacent entries with the
// same key, the key sent once per run; each epoch is sent as its difference
// from the previous entry's epoch (the first from 0), which for slots of
// one key is one byte.
func (m *Sync) encode(e *Encoder) error {
	d := &m.Delta
	var flags, gap uint64
	if d.Full {
		flags |= flagFull
	} else {
		gap = d.Seq - d.Basis
	}
	from := -1
	for i := range d.Origins {
		if d.Origins[i].ID == d.From {
			from = i
			break
		}
	}
	err := firstErr(
		e.enc.EncodeUint(m.Seq),
		e.enc.EncodeUint(m.Ack),
		e.enc.EncodeInt(m.Offset),
		e.enc.EncodeUint(d.Seq),
		e.enc.EncodeUint(gap),
		e.enc.EncodeUint(flags),
		e.enc.EncodeUint(uint64(d.Part)),
		e.enc.EncodeUint(uint64(d.Parts)),
		e.enc.EncodeArrayLen(len(d.Origins)),
	)
	if err != nil {
		return err
	}
	for _, o := range d.Origins {
		if err := firstErr(
			e.enc.EncodeArrayLen(4),
			e.enc.EncodeString(o.ID.Node),
			e.enc.EncodeUint(o.ID.Incarnation),
			e.enc.EncodeInt(o.AsOf),
			e.enc.EncodeInt(o.Age),
		); err != nil {
			return err
		}
	}
	if err := e.enc.EncodeUint(uint64(from)); err != nil {
		return err
	}
	runs := 0
	for i := range d.Entries {
		if i == 0 || d.Entries[i].Key != d.Entries[i-1].Key {
			runs++
		}
	}
	if err := e.enc.EncodeArrayLen(runs); err != nil {
		return err
	}
	var prev int64
	for i := 0; i < len(d.Entries); {
		j := i + 1
		for j < len(d.Entries) && d.Entries[j].Key == d.Entries[i].Key {
			j++
		}
		if err := firstErr(e.enc.EncodeArrayLen(1+4*(j-i)), e.enc.EncodeString(d.Entries[i].Key)); err != nil {
			return err
		}
		for _, en := range d.Entries[i:j] {
			if err := firstErr(
				e.enc.EncodeUint(uint64(en.Origin)),
				e.enc.EncodeInt(en.Epoch-prev),
				e.enc.EncodeUint(uint64(en.Admitted)),
				e.enc.EncodeUint(uint64(en.Offered)),
			); err != nil {
				return err
			}
			prev = en.Epoch
		}
		i = j
	}
	if err := e.enc.EncodeArrayLen(len(d.Quotas)); err != nil {
		return err
	}
	for _, q := range d.Quotas {
		if err := firstErr(
			e.enc.EncodeArrayLen(5),
			e.enc.EncodeString(q.Key),
			e.enc.EncodeUint(uint64(q.Origin)),
			e.enc.EncodeUint(uint64(q.Epoch)),
			e.enc.EncodeUint(q.Seq),
			e.enc.EncodeUint(uint64(q.Quota)),
		); err != nil {
			return err
		}
	}
	if err := e.enc.EncodeArrayLen(len(m.Misses)); err != nil {
		return err
	}
	for _, id := range m.Misses {
		if err := e.enc.EncodeString(id); err != nil {
			return err
		}
	}
	return nil
}
