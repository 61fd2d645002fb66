package cputime

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// Self is the CPU time this process used so far, user and system.
func Self() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Process is the CPU time process pid used so far, user and system, from
// /proc/<pid>/stat.
func Process(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStat(pid, string(raw))
}
