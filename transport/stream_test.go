package transport

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestStreamLayerRoundTrip(t *testing.T) {
	ca := testCA(t)
	a, b := startNode(t, ca, "a"), startNode(t, ca, "b")
	la, err := a.t.StreamLayer('r')
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.t.StreamLayer('r')
	if err != nil {
		t.Fatal(err)
	}
	mesh(t, a, b)
	waitStable(t, 5*time.Second, a, b)

	served := make(chan error, 1)
	go func() {
		c, err := lb.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			served <- err
			return
		}
		_, err = c.Write(append([]byte("pong:"), buf...))
		served <- err
	}()
	c, err := la.Dial(b.addr(), 2*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if c.LocalAddr() == nil || c.RemoteAddr().String() != b.addr() {
		t.Errorf("addresses %v -> %v, want remote %s", c.LocalAddr(), c.RemoteAddr(), b.addr())
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 9)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong:ping" {
		t.Fatalf("round trip = %q, %v", buf, err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server side: %v", err)
	}
	// b closed its side: a reads EOF.
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("Read after the other side's Close = %d, %v, want EOF", n, err)
	}

	// Deadlines.
	c2, err := la.Dial(b.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c2.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past its deadline = %v, want os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if _, err := c2.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("deadline error %v is not a net.Error timeout", err)
	}
	accepted, err := lb.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = accepted.Close()

	// The connection is the peer connection: no second connection appeared.
	if n := a.t.livePeerConns("b"); n != 1 {
		t.Errorf("%d connections a->b after stream dials, want 1", n)
	}
}

func TestStreamLayerKinds(t *testing.T) {
	ca := testCA(t)
	a, b := startNode(t, ca, "a"), startNode(t, ca, "b")
	if _, err := a.t.StreamLayer(kindSync); !errors.Is(err, ErrKindTaken) {
		t.Errorf("StreamLayer(kindSync) = %v, want ErrKindTaken", err)
	}
	lx, err := a.t.StreamLayer('x')
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.t.StreamLayer('x'); !errors.Is(err, ErrKindTaken) {
		t.Errorf("second StreamLayer('x') = %v, want ErrKindTaken", err)
	}
	mesh(t, a, b)
	waitStable(t, 5*time.Second, a, b)

	// b has no 'x' layer: the stream is reset.
	c, err := lx.Dial(b.addr(), time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read on a stream of an unknown kind = %v, want a reset", err)
	}
	_ = c.Close()

	// Close: Accept fails, the kind can be taken again, Dial fails.
	_ = lx.Close()
	if _, err := lx.Accept(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want ErrClosed and net.ErrClosed", err)
	}
	if _, err := lx.Dial(b.addr(), time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Close = %v, want ErrClosed", err)
	}
	if _, err := a.t.StreamLayer('x'); err != nil {
		t.Errorf("StreamLayer('x') after Close: %v", err)
	}
}

func TestStreamLayerDialWaitsAndTimesOut(t *testing.T) {
	ca := testCA(t)
	a := startNode(t, ca, "a")
	la, err := a.t.StreamLayer('r')
	if err != nil {
		t.Fatal(err)
	}
	// b is configured but does not exist yet.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	_ = dead.Close()
	if err := a.t.SetPeers(map[string]string{"b": deadAddr}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := la.Dial(deadAddr, 200*time.Millisecond); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Dial to a configured peer that is down = %v, want ErrNotConnected", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > time.Second {
		t.Errorf("Dial gave up after %v, want about its 200ms timeout", d)
	}

	// The peer appears on that address while Dial waits: Dial succeeds.
	b := startNodeAt(t, ca, "b", deadAddr)
	lb, err := b.t.StreamLayer('r')
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if c, err := lb.Accept(); err == nil {
			_, _ = io.Copy(c, c)
			_ = c.Close()
		}
	}()
	c, err := la.Dial(deadAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("Dial while the peer comes up: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Errorf("echo = %q, %v", buf, err)
	}
}

func TestStreamLayerDialsUnknownAddress(t *testing.T) {
	ca := testCA(t)
	a, c := startNode(t, ca, "a"), startNode(t, ca, "c")
	la, err := a.t.StreamLayer('r')
	if err != nil {
		t.Fatal(err)
	}
	lc, err := c.t.StreamLayer('r')
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if s, err := lc.Accept(); err == nil {
			_, _ = s.Write([]byte("c"))
			_ = s.Close()
		}
	}()
	// Neither side lists the other: a reaches c by address only.
	s, err := la.Dial(c.addr(), 3*time.Second)
	if err != nil {
		t.Fatalf("Dial to an address SetPeers did not give: %v", err)
	}
	defer s.Close()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(s, buf); err != nil || buf[0] != 'c' {
		t.Errorf("read %q, %v", buf, err)
	}
	// Each side hears of the connection from its own goroutine.
	eventually(t, 5*time.Second, "the dialed connection to become the peer connection on both sides", func() bool {
		return a.h.isUp("c") && c.h.isUp("a")
	})
	ps := a.t.Peers()
	if len(ps) != 1 || ps[0].ID != "c" || ps[0].Configured || !ps[0].Outbound {
		t.Errorf("Peers() = %+v, want c, not configured, outbound", ps)
	}
	// A second Dial reuses it.
	s2, err := la.Dial(c.addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()
	if n := a.t.livePeerConns("c"); n != 1 {
		t.Errorf("%d connections to c, want 1", n)
	}
}
