// Package cputime reads the CPU time, user and system, used by this
// process and by others (from /proc on Linux), for figures such as the
// bench's CPU per 100k decisions. Outside Linux nothing is measured and
// every reading fails with ErrUnsupported.
package cputime

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrUnsupported reports a system where CPU time is not measured.
var ErrUnsupported = errors.New("quotamesh/cputime: CPU time not measured on this system")

// Reading is the CPU time used so far by this process (Self) and by a set
// of other processes (Others); OthersOK is false when they could not all
// be read (none given, not Linux, a process gone).
type Reading struct {
	Self, Others time.Duration
	OthersOK     bool
}

// Read takes a reading of this process and of the processes pids. A
// failure to read this process leaves Self at 0.
func Read(pids []int) Reading {
	var r Reading
	r.Self, _ = Self()
	if len(pids) == 0 {
		return r
	}
	for _, pid := range pids {
		t, err := Process(pid)
		if err != nil {
			return Reading{Self: r.Self}
		}
		r.Others += t
	}
	r.OthersOK = true
	return r
}

// Since is the CPU time used from r0 to r; Others only when both readings
// have it.
func (r Reading) Since(r0 Reading) Reading {
	d := Reading{Self: r.Self - r0.Self, OthersOK: r.OthersOK && r0.OthersOK}
	if d.OthersOK {
		d.Others = r.Others - r0.Others
	}
	return d
}

// userHZ is the unit of /proc/<pid>/stat's times: fixed at 100 by Linux's
// ABI whatever the kernel's tick.
const userHZ = 100

// parseStat reads the user and system CPU time from the contents of
// /proc/<pid>/stat.
func parseStat(pid int, raw string) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses: fields are counted after its last closing one.
	// utime and stime are fields 14 and 15, so 12th and 13th after it.
	i := strings.LastIndex(raw, ") ")
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(raw[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %q: %w", pid, s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
