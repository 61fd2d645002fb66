package consensus

import (
	"bytes"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/quotamesh/quotamesh/limits"
)

// v1Rule, v1Command and v1Snapshot are the encodings as they were before
// rules could be shadow rules: what older nodes wrote to their logs and
// snapshots, and still send.
type v1Rule struct {
	Pattern string        `msgpack:"p"`
	Count   int64         `msgpack:"c"`
	Window  time.Duration `msgpack:"w"`
}

type v1Command struct {
	V       uint8  `msgpack:"v"`
	Op      op     `msgpack:"o"`
	ID      uint64 `msgpack:"i"`
	Rule    v1Rule `msgpack:"r"`
	Pattern string `msgpack:"p"`
}

type v1Snapshot struct {
	V      uint8    `msgpack:"v"`
	Index  uint64   `msgpack:"x"`
	Rules  []v1Rule `msgpack:"r"`
	Recent []recent `msgpack:"d"`
}

// TestShadowEncodingCompatible: entries and snapshots written before the
// shadow attribute existed decode as enforcing rules, an enforcing rule
// encodes byte for byte as it did, and a shadow rule survives a round trip.
func TestShadowEncodingCompatible(t *testing.T) {
	old := v1Command{V: formatVersion, Op: opSet, ID: 7, Rule: v1Rule{"user:*", 10, time.Second}}
	oldBytes, err := msgpack.Marshal(&old)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCommand(oldBytes)
	if err != nil || got.Rule.rule() != (limits.Rule{Pattern: "user:*", Rate: limits.Rate{Count: 10, Window: time.Second}}) {
		t.Errorf("old command decoded as %+v, %v; want the enforcing rule user:* 10/s", got.Rule.rule(), err)
	}
	newBytes, err := encodeCommand(command{Op: opSet, ID: 7, Rule: toWire(rule("user:*", "10/s"))})
	if err != nil || !bytes.Equal(newBytes, oldBytes) {
		t.Errorf("an enforcing rule encodes as %x, %v; want the old bytes %x", newBytes, err, oldBytes)
	}

	shadow := rule("user:*", "10/s")
	shadow.Shadow = true
	b, err := encodeCommand(command{Op: opSet, ID: 8, Rule: toWire(shadow)})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeCommand(b); err != nil || got.Rule.rule() != shadow {
		t.Errorf("shadow command round trip = %+v, %v; want %+v", got.Rule.rule(), err, shadow)
	}

	snapBytes, err := msgpack.Marshal(&v1Snapshot{V: formatVersion, Index: 3, Rules: []v1Rule{{"a", 1, time.Second}, {"b:*", 2, time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	_, tb, err := decodeSnapshot(snapBytes)
	if err != nil || tb.Len() != 2 {
		t.Fatalf("old snapshot: %v, %v", tb, err)
	}
	for _, r := range tb.Rules() {
		if r.Shadow {
			t.Errorf("old snapshot rule %v decoded as a shadow rule", r)
		}
	}
	b, err = encodeSnapshot(snapshot{Index: 4, Rules: toWireRules([]limits.Rule{shadow, rule("a", "1/s")})})
	if err != nil {
		t.Fatal(err)
	}
	if _, tb, err := decodeSnapshot(b); err != nil || !tb.Equal(mustTable(t, shadow, rule("a", "1/s"))) {
		t.Errorf("shadow snapshot round trip = %v, %v", tb.Rules(), err)
	}
}

func mustTable(t *testing.T, rules ...limits.Rule) *limits.Table {
	t.Helper()
	tb, err := limits.NewTable(rules...)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}
