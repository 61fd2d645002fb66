//go:build race

package main

// raceEnabled: the node processes the accuracy tests start are this test
// binary, race-instrumented, 5 to 10 times slower; their accuracy figures
// then describe the instrumentation, not QuotaMesh.
const raceEnabled = true
