package statusview

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/engine"
	"github.com/quotamesh/quotamesh/node"
)

func TestPrint(t *testing.T) {
	st := &node.Status{
		Node: "n1", ClusterID: "c", Advertise: "127.0.0.1:7941", Ready: true, Policy: "conservative", Uptime: 90 * time.Second,
		Raft: node.RaftStatus{State: "Leader", Leader: "n1", Term: 3, Rules: 2},
		Members: []node.MemberStatus{
			{ID: "n1", Addr: "127.0.0.1:7941", Self: true, Voter: true, Leader: true},
			{ID: "n2", Addr: "127.0.0.1:7942", Voter: true, Connected: true, Reachable: true, SyncLag: 15 * time.Millisecond, RTT: 300 * time.Microsecond},
			{ID: "n3", Addr: "127.0.0.1:7943", SyncLag: -1},
		},
		AdmittedPerSec: 120, OfferedPerSec: 200, Keys: 4,
		TopKeys: []node.KeyStatus{{
			KeyStatus:     engine.KeyStatus{Key: "orders", Limit: "100/s", Quota: 60, Share: 0.6},
			PerNodePerSec: map[string]float64{"n1": 60, "n2": 40},
		}},
		Shadow: []node.ShadowStatus{{Pattern: "user:*", Rate: "10/s", WouldDeny: 7}},
	}
	n2 := &node.Status{Node: "n2", Ready: false, NotReady: []string{"no leader"},
		Shadow:  []node.ShadowStatus{{Pattern: "user:*", Rate: "10/s", WouldDeny: 2}},
		TopKeys: []node.KeyStatus{{KeyStatus: engine.KeyStatus{Key: "orders", Share: 0.4}}},
		Clients: node.ClientsStatus{AllowAnonymous: true}}
	var b bytes.Buffer
	Print(&b, st, map[string]*node.Status{"n1": st, "n2": n2}, true, 3*time.Second)
	out := b.String()
	for _, want := range []string{
		"cluster c: 3 members, Raft leader n1 (term 3), 2 limit rules, policy conservative",
		"up 1m30s",
		"INSECURE: n2 serves clients without a certificate",
		"n1 *", "voter,leader", "not ready: no leader", "15ms", "300µs", "never",
		"'-': the member did not answer from here within 3s",
		"user:*", "n1 7, n2 2",
		"n1 60, n2 40", "n1 0.60, n2 0.40",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestDur(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-1, "never"}, {0, "0"}, {1500 * time.Nanosecond, "2µs"}, {1234567 * time.Nanosecond, "1ms"}, {90*time.Second + 400*time.Millisecond, "1m30s"},
	} {
		if got := Dur(tc.d); got != tc.want {
			t.Errorf("Dur(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
