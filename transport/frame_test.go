package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	bodies := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{'x'}, 127), bytes.Repeat([]byte{'y'}, 128), bytes.Repeat([]byte{'z'}, 70000)}
	var stream []byte
	for _, b := range bodies {
		stream = AppendFrame(stream, b)
	}
	fr := NewFrameReader(bytes.NewReader(stream), 1<<20)
	for i, want := range bodies {
		got, err := fr.Next()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("frame %d = %d bytes, %v, want %d bytes", i, len(got), err, len(want))
		}
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Errorf("Next at the end = %v, want io.EOF", err)
	}
}

func TestFrameReaderRefusesBadInput(t *testing.T) {
	steps := []struct {
		name  string
		input []byte
		max   int
		want  error
	}{
		{"too large", AppendFrame(nil, make([]byte, 11)), 10, ErrFrameTooLarge},
		{"too large, announced only", binary.AppendUvarint(nil, 1<<40), 1 << 20, ErrFrameTooLarge},
		{"too large before the prefix ends", []byte{0xff, 0xff, 0xff}, 1 << 20, ErrFrameTooLarge},
		{"overflow", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02}, 1 << 62, ErrBadFrame},
		{"eleven bytes", bytes.Repeat([]byte{0x80}, 11), 1 << 62, ErrBadFrame},
		{"not minimal", []byte{0x81, 0x00, 'x'}, 10, ErrBadFrame},
		{"cut in the prefix", []byte{0x81}, 1 << 20, io.ErrUnexpectedEOF},
		{"cut in the body", []byte{5, 'a', 'b'}, 10, io.ErrUnexpectedEOF},
	}
	for _, s := range steps {
		_, err := NewFrameReader(bytes.NewReader(s.input), s.max).Next()
		if !errors.Is(err, s.want) {
			t.Errorf("%s: Next = %v, want %v", s.name, err, s.want)
		}
	}
}

// countingReader counts how many bytes were read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestFrameReaderChecksBeforeAllocating(t *testing.T) {
	// A huge length followed by nothing: Next must fail at once, not try to
	// allocate or read the body.
	input := binary.AppendUvarint(nil, 1<<40)
	allocs := testing.AllocsPerRun(10, func() {
		_, _ = NewFrameReader(bytes.NewReader(input), 1<<20).Next()
	})
	// bufio.Reader, FrameReader and the error: a handful, never the body.
	if allocs > 10 {
		t.Errorf("Next of an oversized frame made %v allocations", allocs)
	}
}

func FuzzFrameReader(f *testing.F) {
	f.Add(AppendFrame(AppendFrame(nil, []byte("hello")), []byte{}), 64)
	f.Add(binary.AppendUvarint(nil, 1<<40), 1024)
	f.Add([]byte{0x81, 0x00}, 16)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 1<<20)
	f.Fuzz(func(t *testing.T, input []byte, max int) {
		if max <= 0 || max > 1<<20 {
			max = 1 << 10
		}
		fr := NewFrameReader(bytes.NewReader(input), max)
		var again []byte
		consumed := 0
		for {
			body, err := fr.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrBadFrame) {
					t.Fatalf("unexpected error %v", err)
				}
				if err == io.EOF && consumed != len(input) {
					t.Fatalf("EOF after %d of %d bytes", consumed, len(input))
				}
				break
			}
			if len(body) > max {
				t.Fatalf("frame of %d bytes with max %d", len(body), max)
			}
			again = AppendFrame(again, body)
			consumed = len(again)
			if !bytes.Equal(input[:consumed], again) {
				t.Fatalf("frames re-encode to different bytes: the prefix was not minimal or was misread")
			}
		}
	})
}
