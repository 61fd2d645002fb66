// Package wire is QuotaMesh's message format, shared by nodes and clients:
// msgpack bodies in length-prefixed frames (docs/design.md section 6).
//
// A frame is a uvarint length followed by that many bytes of body, at most
// MaxFrame (1 MiB) for a message. Framing knows nothing of messages:
// AppendFrame and ReadFrame handle frames, Encoder and Decoder bodies, and
// Append does both. They are QuotaMesh's one framer: the transport's sync
// streams, client and admin streams, and the forwarding streams between
// nodes all frame with them, each stream with its own cap on a body (up to
// FrameLimit). Empty frames and non-minimal length prefixes are refused, a
// length is checked against the cap before anything is allocated, and a
// body is read in chunks.
// A body is one msgpack array [version, type, fields...] with Version 1.
//
// Decoding untrusted bytes is safe: the decoder reads msgpack by hand, checks
// every length against its cap before allocating (1 MiB per frame, 256
// bytes per key, 64 per node ID, 100,000 entries per frame), checks every
// number's range, and validates the message as a whole (a delta with
// crdt.Delta.Validate), so that a decoded message is always valid. It never
// panics, and allocates at most a small multiple of the body's size. Every
// error wraps ErrTooLarge, ErrMalformed, ErrVersion or ErrUnknownType and
// names the field.
//
// Message types 1 to 31 are for node-to-node streams (Hello, Sync); 32 and
// up are reserved for client messages. Adding a type takes a struct that
// implements Message, its encode and decode functions, and one case in
// Decode.
//
// Encoding a delta stays within crdt's size bounds (crdt.Delta.SizeBound),
// so a delta part cut by the crdt store always fits one frame.
//
// This package and consensus are the only users of msgpack in QuotaMesh.
package wire
