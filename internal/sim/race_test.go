//go:build race

package sim

// raceEnabled: the simulator is one goroutine, so the race detector finds
// nothing in its scenario runs and only makes them 10 to 20 times slower.
// Under it the long scenario tables run a shorter load (see simLength).
const raceEnabled = true
