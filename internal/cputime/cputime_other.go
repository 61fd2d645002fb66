//go:build !linux

package cputime

import "time"

// Self is not measured outside Linux.
func Self() (time.Duration, error) { return 0, ErrUnsupported }

// Process is not measured outside Linux.
func Process(int) (time.Duration, error) { return 0, ErrUnsupported }
