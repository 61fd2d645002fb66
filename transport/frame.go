package transport

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// DefaultMaxFrameSize is the default largest frame body, 1 MiB.
const DefaultMaxFrameSize = 1 << 20

// MaxFrameSizeLimit is the largest MaxFrameSize a Config may set, 64 MiB.
const MaxFrameSizeLimit = 64 << 20

// AppendFrame appends body to dst with its uvarint length prefix: the
// framing of every stream this package carries.
func AppendFrame(dst, body []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// FrameReader reads length-prefixed frames from a stream, refusing any whose
// announced length exceeds its maximum before allocating for it. It is not
// safe for concurrent use.
type FrameReader struct {
	r   *bufio.Reader
	max int
}

// NewFrameReader reads frames of at most max bytes from r (max <= 0 means
// DefaultMaxFrameSize).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max <= 0 {
		max = DefaultMaxFrameSize
	}
	return &FrameReader{r: bufio.NewReaderSize(r, 16<<10), max: max}
}

// Next returns the next frame's body, newly allocated (the caller owns it).
// It returns io.EOF at a clean end between frames; an error wrapping
// ErrFrameTooLarge or ErrBadFrame for a bad length prefix, after which the
// stream cannot be read further; io.ErrUnexpectedEOF for a frame cut short;
// and the stream's own error otherwise.
func (fr *FrameReader) Next() ([]byte, error) {
	n, err := fr.readLength()
	if err != nil {
		return nil, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(fr.r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// readLength reads a minimal uvarint and refuses it as soon as it is known
// to exceed the maximum, without waiting for the rest of the prefix.
func (fr *FrameReader) readLength() (int, error) {
	var x uint64
	var shift uint
	for i := range binary.MaxVarintLen64 {
		b, err := fr.r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, fmt.Errorf("%w: length prefix overflows 64 bits", ErrBadFrame)
		}
		if b < 0x80 {
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: length prefix is not minimally encoded", ErrBadFrame)
			}
			x |= uint64(b) << shift
			if x > uint64(fr.max) {
				return 0, fmt.Errorf("%w: %d bytes announced, at most %d allowed", ErrFrameTooLarge, x, fr.max)
			}
			return int(x), nil
		}
		x |= uint64(b&0x7f) << shift
		if x > uint64(fr.max) {
			return 0, fmt.Errorf("%w: more than %d bytes announced, at most %d allowed", ErrFrameTooLarge, x, fr.max)
		}
		shift += 7
	}
	return 0, fmt.Errorf("%w: length prefix overflows 64 bits", ErrBadFrame)
}
