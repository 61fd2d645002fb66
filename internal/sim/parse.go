package sim

import (
	"fmt"
	"strings"
	"time"
)

// ParseNodeEvent reads AT:DURATION:NODE (10s:2s:0), the form of the sim
// command's --pause and --restart.
func ParseNodeEvent(s string) (at, d time.Duration, node int, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, 0, 0, fmt.Errorf("want AT:DURATION:NODE, e.g. 10s:2s:0")
	}
	if at, err = time.ParseDuration(parts[0]); err != nil {
		return 0, 0, 0, fmt.Errorf("time %q: %v", parts[0], err)
	}
	if d, err = time.ParseDuration(parts[1]); err != nil {
		return 0, 0, 0, fmt.Errorf("duration %q: %v", parts[1], err)
	}
	if _, err = fmt.Sscan(parts[2], &node); err != nil {
		return 0, 0, 0, fmt.Errorf("node %q: not a number", parts[2])
	}
	return at, d, node, nil
}

// ParsePartition reads START:END:GROUPS (5s:12s:0+1/2: nodes joined by
// '+', groups by '/'), the form of the sim command's --partition.
func ParsePartition(s string) (Partition, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Partition{}, fmt.Errorf("want START:END:GROUPS, e.g. 5s:12s:0+1/2")
	}
	var p Partition
	var err error
	if p.Start, err = time.ParseDuration(parts[0]); err != nil {
		return p, fmt.Errorf("start %q: %v", parts[0], err)
	}
	if p.End, err = time.ParseDuration(parts[1]); err != nil {
		return p, fmt.Errorf("end %q: %v", parts[1], err)
	}
	for _, g := range strings.Split(parts[2], "/") {
		var group []int
		for _, n := range strings.Split(g, "+") {
			var i int
			if _, err := fmt.Sscan(n, &i); err != nil {
				return p, fmt.Errorf("node %q in groups %q: not a number", n, parts[2])
			}
			group = append(group, i)
		}
		p.Groups = append(p.Groups, group)
	}
	return p, nil
}
