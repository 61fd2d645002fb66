package window_test

import (
	"fmt"
	"time"

	"github.com/quotamesh/quotamesh/limits"
	"github.com/quotamesh/quotamesh/window"
)

func ExampleWindow() {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	w, err := window.New(limits.MustParseRate("3/s"), start)
	if err != nil {
		panic(err)
	}
	for i := range 4 {
		fmt.Println(i, w.Allow(start))
	}
	d := w.Decide(start+int64(400*time.Millisecond), 1)
	fmt.Println(d.Allowed, d.RetryAfter)
	fmt.Println(w.Allow(start + int64(time.Second))) // the first slot left the window
	// Output:
	// 0 true
	// 1 true
	// 2 true
	// 3 false
	// false 600ms
	// true
}

func ExampleRegistry() {
	table, err := limits.NewTable(
		limits.Rule{Pattern: "orders.create", Rate: limits.MustParseRate("1000/s")},
		limits.Rule{Pattern: "user:*", Rate: limits.MustParseRate("2/min")},
	)
	if err != nil {
		panic(err)
	}
	reg, err := window.NewRegistry(window.Config{}, table)
	if err != nil {
		panic(err)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	for range 3 {
		d, err := reg.Allow(now, "user:42")
		fmt.Println(d.Allowed, d.Remaining, err)
	}
	d, err := reg.Allow(now, "health") // matches no rule
	fmt.Println(d.Allowed, d.Unlimited, err)
	fmt.Println(reg.Len())
	// Output:
	// true 1 <nil>
	// true 0 <nil>
	// false 0 <nil>
	// true true <nil>
	// 1
}
