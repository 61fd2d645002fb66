package tcpecho

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// freePort is 127.0.0.1 and a TCP port the system just handed out.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The baseline's client and server: pipelined calls from many goroutines
// are all answered, a closed client says so, and a server that goes away
// fails the calls with ErrUnavailable instead of hanging them.
func TestClientServer(t *testing.T) {
	addr := freePort(t)
	sctx, stopServer := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(sctx, addr) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for range 500 {
				d, err := c.Allow(ctx, "k")
				if err != nil || !d.Allowed {
					errs <- errors.Join(err, errors.New("not allowed"))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call: %v", err)
	}
	// The server stops: waiting and later calls fail with ErrUnavailable.
	stopServer()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Allow(ctx, "k")
		if errors.Is(err, quotamesh.ErrUnavailable) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the server stopped: %v, want ErrUnavailable", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	// A closed client: ErrClosed, or the failure it already had.
	if _, err := c.Allow(ctx, "k"); err == nil {
		t.Errorf("Allow after Close: no error")
	}
}

func TestServeBadAddress(t *testing.T) {
	if err := Serve(context.Background(), "256.0.0.1:1"); err == nil {
		t.Fatal("Serve on 256.0.0.1: no error")
	}
}
