//go:build race

package window

// raceEnabled lets the longest tests do less work under the race detector,
// which slows them about tenfold; their coverage of time stays the same.
const raceEnabled = true
