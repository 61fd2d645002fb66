//go:build fault

package cluster_test

import (
	"fmt"
	"html"
	"strings"
	"time"
)

// timelineSVG draws admitted per second (the last K slots' admissions) per
// node and for the cluster, against the limit and the normal bound, with
// the fault windows shaded. Buckets before from are drawn but greyed.
func timelineSVG(d *decisionLog, faults []faultWindow, limit float64, p boundParams, from, to int) string {
	h := d.h
	const (
		width, height    = 1200.0, 420.0
		left, right, top = 60.0, 20.0, 30.0
		bottom           = 50.0
		plotW, plotH     = width - left - right, height - top - bottom
	)
	series := d.admittedSeries()
	k := int(p.Window / bucketWidth)
	n := min(to, len(series[0]))
	if n <= k {
		return `<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25">run too short to draw</text></svg>`
	}
	rate := func(s []int64, b int) float64 { // admitted in the K slots ending at b, per window
		var sum int64
		for i := max(0, b-k+1); i <= b; i++ {
			sum += s[i]
		}
		return float64(sum)
	}
	total := make([]int64, n)
	for _, s := range series {
		for b := range n {
			total[b] += s[b]
		}
	}
	yMax := limit * 1.6
	for b := k; b < n; b++ {
		yMax = max(yMax, rate(total, b)*1.05)
	}
	tEnd := h.bucketStart(n).Seconds()
	x := func(sec float64) float64 { return left + plotW*sec/tEnd }
	y := func(v float64) float64 { return top + plotH*(1-v/yMax) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for _, f := range faults {
		x0, x1 := x(f.Start.Seconds()), x((f.End + healGrace).Seconds())
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f4c7c3" opacity="0.6"/>`+"\n", x0, top, max(x(f.End.Seconds())-x0, 1), plotH)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#fce8b2" opacity="0.6"/>`+"\n", x(f.End.Seconds()), top, x1-x(f.End.Seconds()), plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" transform="rotate(-90 %.1f %.1f)" fill="#a50e0e">%s</text>`+"\n", x0+10, top+plotH-4, x0+10, top+plotH-4, html.EscapeString(f.Name))
		for _, r := range f.Resets { // the reset's floor, where windows start counting afresh
			if r.matches(d.key) {
				xf := x(r.Floor.Seconds())
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#9334e6" stroke-dasharray="4,2"/><text x="%.1f" y="%.1f" fill="#9334e6">floor</text>`+"\n", xf, xf, top, top+plotH, xf+3, top+12)
			}
		}
	}
	if from > 0 {
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#eeeeee"/>`+"\n", left, top, x(h.bucketStart(from).Seconds())-left, plotH)
	}
	// Axes and grid.
	for v := 0.0; v <= yMax; v += limit / 4 {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", left, left+plotW, y(v), y(v), left-4, y(v)+4, v)
	}
	step := 10.0
	if tEnd > 300 {
		step = 60
	}
	for s := 0.0; s <= tEnd; s += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0fs</text>`+"\n", x(s), top+plotH+16, s)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d93025" stroke-dasharray="6,4"/>`+"\n", left, left+plotW, y(limit), y(limit))
	nb := limit * p.factor(boundNormal)
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#d93025" stroke-dasharray="2,3" opacity="0.7"/>`+"\n", left, left+plotW, y(nb), y(nb))
	poly := func(s []int64, color string, w float64) {
		var pts []string
		for i := k; i < n; i++ {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(h.bucketStart(i+1).Seconds()), y(rate(s, i))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%.1f" points="%s"/>`+"\n", color, w, strings.Join(pts, " "))
	}
	colors := []string{"#1a73e8", "#188038", "#e37400", "#9334e6", "#12b5cb", "#c5221f", "#5f6368"}
	for i, s := range series {
		poly(s[:n], colors[i%len(colors)], 1)
	}
	poly(total, "#000", 1.8)
	// Legend.
	lx := left + 8
	for i, id := range h.nodes {
		fmt.Fprintf(&b, `<rect x="%.1f" y="10" width="12" height="3" fill="%s"/><text x="%.1f" y="16">%s</text>`+"\n", lx, colors[i%len(colors)], lx+16, id)
		lx += 50
	}
	fmt.Fprintf(&b, `<rect x="%.1f" y="10" width="12" height="3" fill="#000"/><text x="%.1f" y="16">cluster admitted per %v (%s)</text>`+"\n", lx, lx+16, p.Window, d.mode)
	lx += 170
	fmt.Fprintf(&b, `<text x="%.1f" y="16" fill="#d93025">- - limit %.0f, ··· normal bound %.2f×</text>`+"\n", lx, limit, p.factor(boundNormal))
	lx += 230
	fmt.Fprintf(&b, `<rect x="%.1f" y="8" width="12" height="9" fill="#f4c7c3"/><text x="%.1f" y="16">fault</text><rect x="%.1f" y="8" width="12" height="9" fill="#fce8b2"/><text x="%.1f" y="16">%v after heal</text>`+"\n", lx, lx+16, lx+52, lx+68, healGrace)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">run time (admitted over the last %v at each %v)</text>`+"\n", left+plotW/2, height-8, p.Window, time.Duration(bucketWidth))
	b.WriteString("</svg>\n")
	return b.String()
}
