package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/quotamesh/quotamesh/internal/sim"
)

// `sim` takes the bench's workload flags and SDK clients, and reports per
// key in its JSON as the bench does.
func TestSimWorkloadAndClients(t *testing.T) {
	code, out, errOut := runCmd(t, time.Minute, "sim", "--nodes", "3", "--key", "user:*", "--keys", "20", "--limit", "10/s",
		"--duration", "3s", "--clients", "1", "--pattern", "rotate", "--period", "200ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	var r sim.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not a result: %v\n%s", err, out)
	}
	if r.PerKey.Keys != 20 || r.PerKey.Offered != 20 || r.ClientRequests == 0 || !strings.Contains(r.Workload, "hot:0.9@200ms") {
		t.Errorf("keys %d, offered %d, client requests %d, workload %q; want 20 keys through SDK clients on a hot node moving every 200ms",
			r.PerKey.Keys, r.PerKey.Offered, r.ClientRequests, r.Workload)
	}
	for _, bad := range [][]string{{"--keys", "2"}, {"--placement", "near"}, {"--period", "1s"}, {"--nodes", "0"}} {
		code, _, errOut := runCmd(t, time.Minute, append([]string{"sim", "--duration", "1s"}, bad...)...)
		if code == 0 || !strings.Contains(errOut, bad[0]) {
			t.Errorf("sim %v: exit %d, stderr %q; want a refusal naming %s", bad, code, errOut, bad[0])
		}
	}
}
