package cputime

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// Fields after the command name: state, ppid, pgrp, session, tty_nr,
	// tpgid, flags, minflt, cminflt, majflt, cmajflt, utime, stime, ...
	const rest = " S 1 2 3 4 5 6 7 8 9 10 %s %s 0 0 20 0"
	tests := []struct {
		raw  string
		want time.Duration
		ok   bool
	}{
		{"42 (quotamesh)" + fmt.Sprintf(rest, "150", "50"), 2 * time.Second, true},
		{"42 (a) b)" + fmt.Sprintf(rest, "1", "2"), 30 * time.Millisecond, true}, // a name with ") " in it
		{"42 (quotamesh)" + fmt.Sprintf(rest, "0", "0"), 0, true},
		{"42 (quotamesh) S 1 2 3", 0, false},                       // too short
		{"42 quotamesh S 1 2 3 4 5 6 7 8 9 10 1 2 0", 0, false},    // no name
		{"42 (quotamesh)" + fmt.Sprintf(rest, "x", "2"), 0, false}, // not a number
	}
	for i, tt := range tests {
		got, err := parseStat(42, tt.raw)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("step %d: parseStat(%q) = %v, %v; want %v, ok %v", i, tt.raw, got, err, tt.want, tt.ok)
		}
	}
}

func TestSince(t *testing.T) {
	s := time.Second
	tests := []struct {
		r, r0, want Reading
	}{
		{Reading{Self: 3 * s, Others: 5 * s, OthersOK: true}, Reading{Self: s, Others: 2 * s, OthersOK: true}, Reading{Self: 2 * s, Others: 3 * s, OthersOK: true}},
		{Reading{Self: 3 * s, Others: 5 * s, OthersOK: true}, Reading{Self: s}, Reading{Self: 2 * s}}, // others missing before
		{Reading{Self: 3 * s}, Reading{Self: s, Others: 2 * s, OthersOK: true}, Reading{Self: 2 * s}}, // and after
		{Reading{}, Reading{}, Reading{}},
	}
	for i, tt := range tests {
		if got := tt.r.Since(tt.r0); got != tt.want {
			t.Errorf("step %d: %+v.Since(%+v) = %+v, want %+v", i, tt.r, tt.r0, got, tt.want)
		}
	}
}

func TestRead(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := Self(); err != ErrUnsupported {
			t.Errorf("Self() = %v, want ErrUnsupported", err)
		}
		return
	}
	for start := time.Now(); time.Since(start) < 20*time.Millisecond; {
	} // use some CPU
	r := Read([]int{os.Getpid()})
	if r.Self <= 0 || !r.OthersOK || r.Others < 0 {
		t.Errorf("Read(self) = %+v, want CPU time used", r)
	}
	if r := Read(nil); r.OthersOK {
		t.Errorf("Read(nil) = %+v, want OthersOK false", r)
	}
	if r := Read([]int{os.Getpid(), 1 << 30}); r.OthersOK || r.Others != 0 {
		t.Errorf("Read with a missing process = %+v, want OthersOK false and Others 0", r)
	}
}
