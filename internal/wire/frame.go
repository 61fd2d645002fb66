package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// MaxFrame is the largest frame body, in bytes.
const MaxFrame = 1 << 20

// maxPrefix is the longest uvarint length prefix: MaxFrame needs 3 bytes.
const maxPrefix = 3

// AppendFrame appends body to dst as one frame: its length as a uvarint,
// then the body. A body that is empty or longer than MaxFrame is refused
// with ErrMalformed or ErrTooLarge, and dst is returned unchanged.
func AppendFrame(dst, body []byte) ([]byte, error) {
	switch {
	case len(body) == 0:
		return dst, fmt.Errorf("%w: empty frame body", ErrMalformed)
	case len(body) > MaxFrame:
		return dst, fmt.Errorf("%w: frame body of %d bytes; at most %d are allowed", ErrTooLarge, len(body), MaxFrame)
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

// ReadFrame reads one frame from r and returns its body. max caps the body
// length (0, or anything above MaxFrame, means MaxFrame). The length is
// checked before anything is allocated, and the body is read in chunks of
// at most 64 KiB so that a peer claiming a large frame and then stalling
// holds little memory.
//
// It returns io.EOF if r ends before the frame starts, ErrTooLarge for a
// length above max, and ErrMalformed (wrapping io.ErrUnexpectedEOF when r
// ended early) for an empty frame, a non-minimal length prefix or a
// truncated frame.
func ReadFrame(r FrameReader, max int) ([]byte, error) {
	if max <= 0 || max > MaxFrame {
		max = MaxFrame
	}
	var n uint64
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF && i == 0 {
				return nil, io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("%w: frame length: %w", ErrMalformed, err)
		}
		n |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				return nil, fmt.Errorf("%w: frame length prefix is not minimal", ErrMalformed)
			}
			break
		}
		if i == maxPrefix-1 {
			return nil, fmt.Errorf("%w: frame length prefix longer than %d bytes", ErrTooLarge, maxPrefix)
		}
	}
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	case n > uint64(max):
		return nil, fmt.Errorf("%w: frame of %d bytes; at most %d are allowed", ErrTooLarge, n, max)
	}
	const chunk = 64 << 10
	body := make([]byte, 0, min(int(n), chunk))
	for len(body) < int(n) {
		want := min(int(n)-len(body), chunk)
		body = slices.Grow(body, want)
		got, err := io.ReadFull(r, body[len(body):len(body)+want])
		body = body[:len(body)+got]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("%w: frame body: read %d of %d bytes: %w", ErrMalformed, len(body), n, err)
		}
	}
	return body, nil
}
