//go:build !linux

package loadgen

import "time"

// pacer sleeps with time.Sleep outside Linux: the runtime may wake it up to
// a millisecond late, which shows as the generator's lateness.
type pacer struct{}

func newPacer() *pacer               { return &pacer{} }
func (*pacer) sleep(d time.Duration) { time.Sleep(d) }
func (*pacer) close()                {}
