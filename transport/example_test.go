package transport_test

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/transport"
)

// A two-node mesh on 127.0.0.1: a dials b, sends it a frame on the sync
// stream, and b answers on the same connection.
func Example() {
	ca, caKey := newCA()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	start := func(id string, h *inbox) *transport.Transport {
		t, err := transport.New(transport.Config{
			NodeID:      id,
			ListenAddr:  "127.0.0.1:0",
			Certificate: nodeCertificate(ca, caKey, id),
			CAs:         pool,
			Handler:     h,
		})
		if err != nil {
			panic(err)
		}
		return t
	}
	ha, hb := newInbox(), newInbox()
	a, b := start("a", ha), start("b", hb)
	defer a.Close()
	defer b.Close()

	// b accepts any node signed by the CA (Config.AllowPeer is nil), so
	// only a needs to know the other's address.
	if err := a.SetPeers(map[string]string{"b": b.Addr().String()}); err != nil {
		panic(err)
	}
	fmt.Println("a is connected to", ha.wait(ha.up))
	if err := a.Send("b", []byte("hello")); err != nil {
		panic(err)
	}
	fmt.Println("b received", hb.wait(hb.frames))
	if err := b.Send("a", []byte("hi")); err != nil {
		panic(err)
	}
	fmt.Println("a received", ha.wait(ha.frames))
	p := a.Peers()[0]
	fmt.Println("a's peer:", p.ID, "connected:", p.Connected, "outbound:", p.Outbound)
	// Output:
	// a is connected to b
	// b received "hello" from a
	// a received "hi" from b
	// a's peer: b connected: true outbound: true
}

// inbox is a Handler that passes what it is given to the example.
type inbox struct {
	up, frames chan string
}

func newInbox() *inbox {
	return &inbox{up: make(chan string, 16), frames: make(chan string, 16)}
}

// Handler methods run on the transport's goroutines and must not block.
func (h *inbox) PeerUp(peer string)              { put(h.up, peer) }
func (h *inbox) PeerDown(peer string, err error) {}
func (h *inbox) PeerFrame(peer string, body []byte) {
	put(h.frames, fmt.Sprintf("%q from %s", body, peer))
}
func (h *inbox) ServeClient(c *transport.ClientConn) {}

func put(ch chan string, s string) {
	select {
	case ch <- s:
	default:
	}
}

// wait returns the next event on ch, or says that none came.
func (h *inbox) wait(ch chan string) string {
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		return "nothing within 10 s"
	}
}
