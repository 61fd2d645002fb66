package consensustest

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func echo(_ context.Context, req []byte) ([]byte, error) { return append([]byte("re:"), req...), nil }

func TestStreamsAndFaults(t *testing.T) {
	n := NewNetwork()
	a, err := n.Listen("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Listen("b")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	if _, err := n.Listen("a"); err == nil {
		t.Fatal("second Listen on a succeeded")
	}

	accepted := make(chan error, 1)
	go func() {
		c, err := b.Accept()
		if err == nil {
			_, err = io.Copy(c, c) // echo until closed
		}
		accepted <- err
	}()
	c, err := a.Dial("b", time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if got := c.RemoteAddr().String(); got != "b" {
		t.Errorf("RemoteAddr = %q", got)
	}
	buf := make([]byte, 2)
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("echo = %q, %v", buf, err)
	}

	// A partition closes the open stream and refuses new ones.
	n.Partition([]string{"a"}, []string{"b"})
	if _, err := c.Read(buf); err == nil {
		t.Error("read on a stream across a partition succeeded")
	}
	if err := <-accepted; err != nil && !errors.Is(err, io.ErrClosedPipe) {
		t.Logf("server side ended with %v", err)
	}
	if _, err := a.Dial("b", time.Second); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Dial across a partition = %v; want ErrUnreachable", err)
	}
	n.Heal()
	if _, err := a.Dial("nobody", time.Second); !errors.Is(err, ErrRefused) {
		t.Errorf("Dial to nobody = %v; want ErrRefused", err)
	}
	// Nobody accepts on b now: the dial times out.
	if _, err := a.Dial("b", 20*time.Millisecond); err == nil {
		t.Error("Dial with nobody accepting succeeded")
	}

	// Forwarding follows the same links.
	n.Handle("b", echo)
	fa := n.Forwarder("a")
	ctx := context.Background()
	if got, err := fa.Forward(ctx, "b", []byte("x")); err != nil || string(got) != "re:x" {
		t.Fatalf("Forward = %q, %v", got, err)
	}
	n.Disconnect("a")
	if _, err := fa.Forward(ctx, "b", []byte("x")); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Forward from a disconnected node = %v; want ErrUnreachable", err)
	}
	if n.Reachable("a", "c") {
		t.Error("a disconnected node reaches a node that appeared later")
	}
	n.Reconnect("a")
	if _, err := fa.Forward(ctx, "b", []byte("x")); err != nil {
		t.Errorf("Forward after Reconnect = %v", err)
	}
	n.Handle("b", nil)
	if _, err := fa.Forward(ctx, "b", []byte("x")); !errors.Is(err, ErrRefused) {
		t.Errorf("Forward to a removed handler = %v; want ErrRefused", err)
	}
	_ = c.Close()
	_ = b.Close()
	if _, err := b.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v; want net.ErrClosed", err)
	}
}
