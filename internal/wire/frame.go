package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// MaxFrame is the largest frame body of a message, in bytes, and the cap
// of a stream that sets none (a max of 0): 1 MiB.
const MaxFrame = 1 << 20

// FrameLimit is the largest cap a stream may set on its frame bodies, in
// bytes: 64 MiB. The transport's sync streams, whose bodies it does not
// look into, may be configured up to it (transport.MaxFrameSizeLimit).
const FrameLimit = 64 << 20

// maxPrefix is the longest length prefix of a message frame: MaxFrame
// needs 3 bytes.
const maxPrefix = 3

// frameChunk is the most ReadFrame allocates ahead of the bytes it has read.
const frameChunk = 64 << 10

// frameCap is the cap on frame bodies that max sets: 0 or less means
// MaxFrame, and anything above FrameLimit means FrameLimit.
func frameCap(max int) int {
	switch {
	case max <= 0:
		return MaxFrame
	case max > FrameLimit:
		return FrameLimit
	}
	return max
}

// uvarintLen is the length of n's uvarint encoding.
func uvarintLen(n uint64) int {
	k := 1
	for ; n >= 0x80; n >>= 7 {
		k++
	}
	return k
}

// AppendFrame appends body to dst as one frame: its length as a uvarint,
// then the body. A body that is empty or longer than the cap max sets (as
// for ReadFrame) is refused with ErrMalformed or ErrTooLarge, and dst is
// returned unchanged.
func AppendFrame(dst, body []byte, max int) ([]byte, error) {
	switch limit := frameCap(max); {
	case len(body) == 0:
		return dst, fmt.Errorf("%w: empty frame body", ErrMalformed)
	case len(body) > limit:
		return dst, fmt.Errorf("%w: frame body of %d bytes; at most %d are allowed", ErrTooLarge, len(body), limit)
	}
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...), nil
}

// FrameReader is what ReadFrame reads from: a bufio.Reader, a bytes.Reader,
// a QUIC stream wrapped in a bufio.Reader.
type FrameReader interface {
	io.Reader
	io.ByteReader
}

// ReadFrame reads one frame from r and returns its body, newly allocated.
// max caps the body length: 0 or less means MaxFrame, and anything above
// FrameLimit means FrameLimit. The length is checked before anything is
// allocated, a length prefix is refused as soon as it is longer than the
// cap's, and the body is read in chunks of at most 64 KiB, so that a peer
// announcing a large frame and then stalling holds little memory.
//
// It returns io.EOF if r ends before the frame starts; ErrTooLarge for a
// length above the cap; ErrMalformed for an empty frame, a non-minimal
// length prefix, or a frame cut short (then also wrapping
// io.ErrUnexpectedEOF); and r's own error, wrapped, if reading fails
// otherwise. After an error the stream cannot be read further.
func ReadFrame(r FrameReader, max int) ([]byte, error) {
	limit := frameCap(max)
	prefix := uvarintLen(uint64(limit))
	var n uint64
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			switch {
			case err == io.EOF && i == 0:
				return nil, io.EOF
			case err == io.EOF:
				return nil, fmt.Errorf("%w: frame length: %w", ErrMalformed, io.ErrUnexpectedEOF)
			}
			return nil, fmt.Errorf("frame length: %w", err)
		}
		n |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return nil, fmt.Errorf("%w: frame length prefix is not minimal", ErrMalformed)
			}
			break
		}
		if i == prefix-1 {
			return nil, fmt.Errorf("%w: frame length prefix longer than %d bytes; at most %d bytes are allowed", ErrTooLarge, prefix, limit)
		}
	}
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	case n > uint64(limit):
		return nil, fmt.Errorf("%w: frame of %d bytes; at most %d are allowed", ErrTooLarge, n, limit)
	}
	body := make([]byte, 0, min(int(n), frameChunk))
	for len(body) < int(n) {
		want := min(int(n)-len(body), frameChunk)
		body = slices.Grow(body, want)
		got, err := io.ReadFull(r, body[len(body):len(body)+want])
		body = body[:len(body)+got]
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("%w: frame body: read %d of %d bytes: %w", ErrMalformed, len(body), n, io.ErrUnexpectedEOF)
			}
			return nil, fmt.Errorf("frame body: read %d of %d bytes: %w", len(body), n, err)
		}
	}
	return body, nil
}
