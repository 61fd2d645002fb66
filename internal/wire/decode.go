package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/quotamesh/quotamesh/crdt"
	"github.com/quotamesh/quotamesh/limits"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Decoder decodes message bodies. Its zero value is not usable; call
// NewDecoder. A Decoder is not safe for concurrent use; reuse one per
// goroutine.
type Decoder struct {
	body []byte
	r    bytes.Reader
	dec  *msgpack.Decoder
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	d := &Decoder{}
	d.dec = msgpack.NewDecoder(&d.r)
	return d
}

// Decode decodes one message body (a frame without its length prefix), with
// a temporary Decoder.
func Decode(body []byte) (Message, error) { return NewDecoder().Decode(body) }

// Decode decodes one message body: a frame's bytes without the length
// prefix. The message returned is valid, and shares no memory with body.
// Errors wrap ErrTooLarge, ErrMalformed, ErrVersion or ErrUnknownType and
// name the field.
func (d *Decoder) Decode(body []byte) (Message, error) {
	if len(body) > MaxFrame {
		return nil, fmt.Errorf("%w: body of %d bytes; at most %d are allowed", ErrTooLarge, len(body), MaxFrame)
	}
	d.body = body
	d.r.Reset(body)
	d.dec.ResetReader(&d.r)
	defer func() { d.body = nil; d.r.Reset(nil) }()

	n, err := d.arrayLen("message", 2+maxFields, 1)
	if err != nil {
		return nil, err
	}
	if n < 2 {
		return nil, fmt.Errorf("%w: message: array of %d values; a message has a version and a type first", ErrMalformed, n)
	}
	v, err := d.uint("version")
	if err != nil {
		return nil, err
	}
	if v != Version {
		return nil, fmt.Errorf("%w: version %d; this build speaks version %d", ErrVersion, v, Version)
	}
	t, err := d.uint("type")
	if err != nil {
		return nil, err
	}
	var m Message
	switch t {
	case uint64(TypeHello):
		m = &Hello{}
	case uint64(TypeSync):
		m = &Sync{}
	case uint64(TypeClientBatch):
		m = &ClientBatch{}
	case uint64(TypeClientReplies):
		m = &ClientReplies{}
	case uint64(TypeAdminRequest):
		m = &AdminRequest{}
	case uint64(TypeAdminReply):
		m = &AdminReply{}
	default:
		return nil, fmt.Errorf("%w: type %d", ErrUnknownType, t)
	}
	if n-2 != m.fields() {
		return nil, fmt.Errorf("%w: %T has %d fields, not %d", ErrMalformed, m, m.fields(), n-2)
	}
	switch m := m.(type) {
	case *Hello:
		err = d.hello(m)
	case *Sync:
		err = d.sync(m)
	case *ClientBatch:
		err = d.clientBatch(m)
	case *ClientReplies:
		err = d.clientReplies(m)
	case *AdminRequest:
		err = d.adminRequest(m)
	case *AdminReply:
		err = d.adminReply(m)
	}
	if err != nil {
		return nil, err
	}
	if rest := d.r.Len(); rest > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the %T message", ErrMalformed, rest, m)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// maxFields bounds the header's array length: the most fields of any type.
const maxFields = 13

func (d *Decoder) hello(m *Hello) error {
	var err error
	if m.ClusterID, err = d.str("hello cluster ID", MaxClusterIDLen); err != nil {
		return err
	}
	if m.Node, err = d.str("hello node", crdt.MaxNodeIDLen); err != nil {
		return err
	}
	if m.Incarnation, err = d.uint("hello incarnation"); err != nil {
		return err
	}
	m.Addr, err = d.str("hello address", MaxAddrLen)
	return err
}

func (d *Decoder) sync(m *Sync) error {
	var err error
	if m.Seq, err = d.uint("sync seq"); err != nil {
		return err
	}
	if m.Ack, err = d.uint("sync ack"); err != nil {
		return err
	}
	if m.Offset, err = d.int("sync offset"); err != nil {
		return err
	}
	if m.Offset < -MaxOffset || m.Offset > MaxOffset {
		return fmt.Errorf("%w: sync offset %d out of range [%d, %d]", ErrMalformed, m.Offset, -MaxOffset, MaxOffset)
	}
	if err := d.delta(&m.Delta); err != nil {
		return err
	}
	// A name takes at least 2 bytes: its header and one byte.
	n, err := d.arrayLen("sync misses", MaxMisses, 2)
	if err != nil {
		return err
	}
	if n > 0 {
		m.Misses = make([]string, n)
	}
	for i := range m.Misses {
		if m.Misses[i], err = d.str("sync missed member", crdt.MaxNodeIDLen); err != nil {
			return err
		}
		if err := checkText("sync missed member", m.Misses[i], crdt.MaxNodeIDLen); err != nil {
			return err
		}
	}
	return nil
}

// delta decodes the fields of a Sync after seq and ack; see Sync.encode.
func (d *Decoder) delta(dl *crdt.Delta) error {
	var err error
	if dl.Seq, err = d.uint("delta seq"); err != nil {
		return err
	}
	gap, err := d.uint("delta basis gap")
	if err != nil {
		return err
	}
	flags, err := d.uint("delta flags")
	if err != nil {
		return err
	}
	if flags&^flagFull != 0 {
		return fmt.Errorf("%w: delta flags %#x: unknown bits", ErrMalformed, flags)
	}
	dl.Full = flags&flagFull != 0
	switch {
	case dl.Full && gap != 0:
		return fmt.Errorf("%w: delta basis gap %d in a full state", ErrMalformed, gap)
	case !dl.Full && gap >= dl.Seq:
		return fmt.Errorf("%w: delta basis gap %d with seq %d leaves no basis", ErrMalformed, gap, dl.Seq)
	case !dl.Full:
		dl.Basis = dl.Seq - gap
	}
	if dl.Part, err = d.count("delta part", crdt.MaxParts); err != nil {
		return err
	}
	if dl.Parts, err = d.count("delta parts", crdt.MaxParts); err != nil {
		return err
	}

	// An origin state takes at least 6 bytes: array header, a node ID of
	// one byte and its header, and three one-byte numbers.
	n, err := d.arrayLen("delta origins", crdt.MaxDeltaOrigins, 6)
	if err != nil {
		return err
	}
	dl.Origins = make([]crdt.OriginState, n)
	for i := range dl.Origins {
		o := &dl.Origins[i]
		k, err := d.arrayLen("delta origin", 4, 1)
		if err != nil {
			return err
		}
		if k != 4 {
			return fmt.Errorf("%w: delta origins[%d] has %d values, not 4", ErrMalformed, i, k)
		}
		if o.ID.Node, err = d.str("delta origin node", crdt.MaxNodeIDLen); err != nil {
			return err
		}
		if o.ID.Incarnation, err = d.uint("delta origin incarnation"); err != nil {
			return err
		}
		if o.AsOf, err = d.int("delta origin asOf"); err != nil {
			return err
		}
		if o.Age, err = d.int("delta origin age"); err != nil {
			return err
		}
	}

	from, err := d.count("delta from", len(dl.Origins)-1)
	if err != nil {
		return err
	}
	dl.From = dl.Origins[from].ID

	// A run takes at least 7 bytes: array header, a key of one byte and its
	// header, and one entry of four one-byte numbers.
	runs, err := d.arrayLen("delta entries", crdt.MaxDeltaEntries, 7)
	if err != nil {
		return err
	}
	if runs > 0 {
		// Normal deltas carry two slots per key; bounded by the bytes left
		// (an entry takes at least 4), so a lying header costs little.
		dl.Entries = make([]crdt.Entry, 0, min(2*runs, d.r.Len()/8))
	}
	var epoch int64
	for range runs {
		k, err := d.arrayLen("delta entry run", 1+4*crdt.MaxDeltaEntries, 1)
		if err != nil {
			return err
		}
		if k < 5 || (k-1)%4 != 0 {
			return fmt.Errorf("%w: delta entry run of %d values; a run is a key and 4 values per entry", ErrMalformed, k)
		}
		if len(dl.Entries)+(k-1)/4 > crdt.MaxDeltaEntries {
			return fmt.Errorf("%w: delta entries: more than %d", ErrTooLarge, crdt.MaxDeltaEntries)
		}
		key, err := d.str("delta entry key", limits.MaxKeyLen)
		if err != nil {
			return err
		}
		// The run's length was checked against the bytes left: growing by
		// it allocates what the frame can hold, no more.
		dl.Entries = slices.Grow(dl.Entries, (k-1)/4)
		for range (k - 1) / 4 {
			var en crdt.Entry
			en.Key = key
			if en.Origin, err = d.count("delta entry origin", len(dl.Origins)-1); err != nil {
				return err
			}
			delta, err := d.int("delta entry epoch")
			if err != nil {
				return err
			}
			if (delta > 0 && epoch > math.MaxInt64-delta) || (delta < 0 && epoch < math.MinInt64-delta) {
				return fmt.Errorf("%w: delta entry epoch overflows", ErrMalformed)
			}
			epoch += delta
			if epoch < 1 || epoch > crdt.MaxEpoch {
				return fmt.Errorf("%w: delta entry epoch %d out of range [1, %d]", ErrMalformed, epoch, crdt.MaxEpoch)
			}
			en.Epoch = epoch
			a, err := d.count("delta entry admitted", math.MaxUint32)
			if err != nil {
				return err
			}
			o, err := d.count("delta entry offered", math.MaxUint32)
			if err != nil {
				return err
			}
			en.Admitted, en.Offered = uint32(a), uint32(o)
			dl.Entries = append(dl.Entries, en)
		}
	}

	// A quota register takes at least 7 bytes: array header, a key of one
	// byte and its header, and four one-byte numbers.
	nq, err := d.arrayLen("delta quotas", crdt.MaxDeltaEntries, 7)
	if err != nil {
		return err
	}
	if nq > 0 {
		dl.Quotas = make([]crdt.QuotaEntry, nq)
	}
	for i := range dl.Quotas {
		q := &dl.Quotas[i]
		k, err := d.arrayLen("delta quota", 5, 1)
		if err != nil {
			return err
		}
		if k != 5 {
			return fmt.Errorf("%w: delta quotas[%d] has %d values, not 5", ErrMalformed, i, k)
		}
		if q.Key, err = d.str("delta quota key", limits.MaxKeyLen); err != nil {
			return err
		}
		if q.Origin, err = d.count("delta quota origin", len(dl.Origins)-1); err != nil {
			return err
		}
		e, err := d.count("delta quota epoch", int(min(crdt.MaxEpoch, math.MaxInt)))
		if err != nil {
			return err
		}
		if e < 1 {
			return fmt.Errorf("%w: delta quotas[%d] epoch 0; epochs start at 1", ErrMalformed, i)
		}
		q.Epoch = int64(e)
		if q.Seq, err = d.uint("delta quota seq"); err != nil {
			return err
		}
		v, err := d.count("delta quota value", math.MaxUint32)
		if err != nil {
			return err
		}
		q.Quota = uint32(v)
	}
	return nil
}

// malformed wraps a msgpack or read error on field.
func malformed(field string, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s: %w", ErrMalformed, field, err)
}

// peek returns the next msgpack code.
func (d *Decoder) peek(field string) (byte, error) {
	c, err := d.dec.PeekCode()
	if err != nil {
		return 0, malformed(field, err)
	}
	return c, nil
}

// uint reads a non-negative integer of any msgpack integer encoding.
func (d *Decoder) uint(field string) (uint64, error) {
	c, err := d.peek(field)
	if err != nil {
		return 0, err
	}
	switch c {
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32, msgpcode.Uint64:
		v, err := d.dec.DecodeUint64()
		if err != nil {
			return 0, malformed(field, err)
		}
		return v, nil
	case msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
	default:
		if c > msgpcode.PosFixedNumHigh {
			return 0, fmt.Errorf("%w: %s: code %#02x is not an unsigned integer", ErrMalformed, field, c)
		}
	}
	v, err := d.dec.DecodeInt64()
	if err != nil {
		return 0, malformed(field, err)
	}
	if v < 0 {
		return 0, fmt.Errorf("%w: %s: %d is negative", ErrMalformed, field, v)
	}
	return uint64(v), nil
}

// int reads an integer that fits int64.
func (d *Decoder) int(field string) (int64, error) {
	c, err := d.peek(field)
	if err != nil {
		return 0, err
	}
	switch c {
	case msgpcode.Uint64:
		v, err := d.uint(field)
		if err != nil {
			return 0, err
		}
		if v > math.MaxInt64 {
			return 0, fmt.Errorf("%w: %s: %d does not fit int64", ErrMalformed, field, v)
		}
		return int64(v), nil
	case msgpcode.Uint8, msgpcode.Uint16, msgpcode.Uint32,
		msgpcode.Int8, msgpcode.Int16, msgpcode.Int32, msgpcode.Int64:
	default:
		if !msgpcode.IsFixedNum(c) {
			return 0, fmt.Errorf("%w: %s: code %#02x is not an integer", ErrMalformed, field, c)
		}
	}
	v, err := d.dec.DecodeInt64()
	if err != nil {
		return 0, malformed(field, err)
	}
	return v, nil
}

// count reads an integer in [0, max] as an int.
func (d *Decoder) count(field string, max int) (int, error) {
	v, err := d.uint(field)
	if err != nil {
		return 0, err
	}
	if max < 0 || v > uint64(max) {
		return 0, fmt.Errorf("%w: %s: %d out of range [0, %d]", ErrMalformed, field, v, max)
	}
	return int(v), nil
}

// str reads a string of at most max bytes. The length is checked against
// max and against the bytes left before anything is allocated.
func (d *Decoder) str(field string, max int) (string, error) {
	c, err := d.peek(field)
	if err != nil {
		return "", err
	}
	if !msgpcode.IsString(c) {
		return "", fmt.Errorf("%w: %s: code %#02x is not a string", ErrMalformed, field, c)
	}
	n, err := d.dec.DecodeBytesLen()
	if err != nil {
		return "", malformed(field, err)
	}
	switch {
	case n > max:
		return "", fmt.Errorf("%w: %s of %d bytes; at most %d are allowed", ErrTooLarge, field, n, max)
	case n > d.r.Len():
		return "", fmt.Errorf("%w: %s of %d bytes: only %d left", ErrMalformed, field, n, d.r.Len())
	}
	off := len(d.body) - d.r.Len()
	s := string(d.body[off : off+n])
	if _, err := d.r.Seek(int64(n), io.SeekCurrent); err != nil {
		return "", malformed(field, err)
	}
	return s, nil
}

// arrayLen reads an array header of at most max values, each of which
// takes at least minBytes, checked against the bytes left.
func (d *Decoder) arrayLen(field string, max, minBytes int) (int, error) {
	c, err := d.peek(field)
	if err != nil {
		return 0, err
	}
	if !msgpcode.IsFixedArray(c) && c != msgpcode.Array16 && c != msgpcode.Array32 {
		return 0, fmt.Errorf("%w: %s: code %#02x is not an array", ErrMalformed, field, c)
	}
	n, err := d.dec.DecodeArrayLen()
	if err != nil {
		return 0, malformed(field, err)
	}
	switch {
	case n > max:
		return 0, fmt.Errorf("%w: %s: %d values; at most %d are allowed", ErrTooLarge, field, n, max)
	case n > d.r.Len()/minBytes:
		return 0, fmt.Errorf("%w: %s: %d values cannot fit in the %d bytes left", ErrMalformed, field, n, d.r.Len())
	}
	return n, nil
}
