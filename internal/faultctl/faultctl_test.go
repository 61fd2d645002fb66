package faultctl

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/quotamesh/quotamesh/internal/clock"
	"github.com/quotamesh/quotamesh/internal/faultnet"
	"github.com/quotamesh/quotamesh/internal/nodehook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// do sends method path to the layer's routes and returns the code and body.
func do(t *testing.T, a nodehook.Attached, method, target string) (int, string) {
	t.Helper()
	mux := http.NewServeMux()
	for p, h := range a.Routes {
		mux.Handle(p, h)
	}
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w.Code, w.Body.String()
}

func TestAttachOpensAndControlsASocket(t *testing.T) {
	skew := clock.NewSkewed(clock.NewManual(0))
	disk := &delay{}
	a, err := Attach(nodehook.Target{Listen: "127.0.0.1:0", Clock: skew, Disk: disk, Log: zerolog.Nop(), Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	fc, ok := a.PacketConn.(*faultnet.Conn)
	if !ok || a.Close == nil {
		t.Fatalf("Attach without a socket: PacketConn %T, Close set %v; want a *faultnet.Conn it closes", a.PacketConn, a.Close != nil)
	}
	defer a.Close()

	steps := []struct {
		method, target string
		code           int
		body           string
	}{
		{"POST", "/debug/fault/clock?offset=-250ms", 200, `"offset": "-250ms"`},
		{"GET", "/debug/fault/clock", 200, `"offset": "-250ms"`},
		{"POST", "/debug/fault/clock?offset=soon", 400, "offset"},
		{"PUT", "/debug/fault/clock", 405, "GET or POST"},
		{"POST", "/debug/fault/net?drop=0.5&delay=20ms&block=127.0.0.1:9", 200, `"Drop": 0.5`},
		{"POST", "/debug/fault/net?drop=2", 400, "Drop 2"},
		{"POST", "/debug/fault/net?jitter=often", 400, "jitter"},
		{"POST", "/debug/fault/net?heal=1", 200, `"Drop": 0`},
		{"POST", "/debug/fault/net?block_out=127.0.0.1:9", 200, `"BlockedOut"`},
		{"POST", "/debug/fault/net?block_out=nowhere", 400, "block_out address"},
		{"POST", "/debug/fault/disk?delay=80ms", 200, `"delay": "80ms"`},
		{"GET", "/debug/fault/disk", 200, `"delay": "80ms"`},
		{"POST", "/debug/fault/disk?delay=-1s", 400, "delay"},
		{"POST", "/debug/fault/disk?delay=slow", 400, "delay"},
	}
	for i, s := range steps {
		code, body := do(t, a, s.method, s.target)
		if code != s.code || !strings.Contains(body, s.body) {
			t.Errorf("step %d: %s %s = %d %q, want %d containing %q", i, s.method, s.target, code, body, s.code, s.body)
		}
	}
	if got, want := skew.Offset(), -250*time.Millisecond; got != want {
		t.Errorf("clock offset %v, want %v", got, want)
	}
	if f := fc.Faults(); f.Drop != 0 || f.Delay != 0 {
		t.Errorf("faults after heal: %+v, want none", f)
	}
	if got, want := disk.Delay(), 80*time.Millisecond; got != want {
		t.Errorf("disk delay %v, want %v", got, want)
	}
}

// delay is a nodehook.Delay.
type delay struct{ d time.Duration }

func (d *delay) SetDelay(v time.Duration) { d.d = v }
func (d *delay) Delay() time.Duration     { return d.d }

func TestAttachKeepsAGivenSocket(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	a, err := Attach(nodehook.Target{PacketConn: pc, Clock: clock.NewSkewed(clock.NewManual(0)), Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if a.PacketConn != nil || a.Close != nil {
		t.Errorf("Attach with a socket replaced it (%T) or will close it (%v); want neither", a.PacketConn, a.Close != nil)
	}
	if code, _ := do(t, a, "GET", "/debug/fault/net"); code != http.StatusNotImplemented {
		t.Errorf("/debug/fault/net on a plain socket: %d, want 501", code)
	}
	if code, _ := do(t, a, "GET", "/debug/fault/disk"); code != http.StatusNotImplemented {
		t.Errorf("/debug/fault/disk without a disk control: %d, want 501", code)
	}
}
