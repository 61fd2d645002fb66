package sim

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePartition(t *testing.T) {
	p, err := ParsePartition("5s:12s:0+1/2")
	want := Partition{Start: 5 * time.Second, End: 12 * time.Second, Groups: [][]int{{0, 1}, {2}}}
	if err != nil || !reflect.DeepEqual(p, want) {
		t.Fatalf("ParsePartition = %+v, %v; want %+v", p, err, want)
	}
	for in, msg := range map[string]string{
		"5s:12s":       "want START:END:GROUPS",
		"x:12s:0":      `start "x"`,
		"5s:y:0":       `end "y"`,
		"5s:12s:0+a/2": `node "a" in groups "0+a/2"`,
	} {
		if _, err := ParsePartition(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParsePartition(%q) = %v, want an error containing %q", in, err, msg)
		}
	}
}

func TestParseNodeEvent(t *testing.T) {
	at, d, n, err := ParseNodeEvent("10s:2s:1")
	if err != nil || at != 10*time.Second || d != 2*time.Second || n != 1 {
		t.Fatalf("ParseNodeEvent = %v %v %v %v", at, d, n, err)
	}
	for in, msg := range map[string]string{"10s:2s": "want AT:DURATION:NODE", "a:2s:1": `time "a"`, "1s:b:1": `duration "b"`, "1s:2s:c": `node "c"`} {
		if _, _, _, err := ParseNodeEvent(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseNodeEvent(%q) = %v, want an error containing %q", in, err, msg)
		}
	}
}

// FuzzParseFaults: the sim's fault flags never panic, and what parses is
// what Config.Validate then judges.
func FuzzParseFaults(f *testing.F) {
	f.Add("5s:12s:0+1/2")
	f.Add("10s:2s:0")
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParsePartition(s); err == nil && len(p.Groups) == 0 {
			t.Fatalf("ParsePartition(%q) gave no groups", s)
		}
		_, _, _, _ = ParseNodeEvent(s)
	})
}
