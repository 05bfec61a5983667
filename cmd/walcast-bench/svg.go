package main

import (
	"fmt"
	"math"
	"strings"
)

// latPoint is one load level of the latency chart.
type latPoint struct {
	Load     float64 // changes/s
	P50, P99 float64 // ms
}

// latencySVG draws p50 and p99 latency against load: a linear x axis from
// 0, a logarithmic y axis in milliseconds, and the targets (5 ms
// p50, 25 ms p99) as dashed lines. Hand-written SVG, no dependency.
func latencySVG(pts []latPoint) string {
	const (
		w, h                     = 640, 360
		left, right, top, bottom = 70, 130, 30, 50
	)
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	maxX := 1.0
	hiY := 25.0
	loY := 1.0
	for _, p := range pts {
		maxX = math.Max(maxX, p.Load)
		hiY = math.Max(hiY, math.Max(p.P50, p.P99))
		if p.P50 > 0 {
			loY = math.Min(loY, p.P50)
		}
	}
	maxX = niceCeil(maxX)
	yMin := math.Pow(10, math.Floor(math.Log10(loY)))
	yMax := math.Pow(10, math.Ceil(math.Log10(hiY)))
	if yMax <= yMin {
		yMax = yMin * 10
	}
	x := func(v float64) float64 { return float64(left) + pw*v/maxX }
	y := func(v float64) float64 {
		v = math.Max(v, yMin)
		return float64(top) + ph*(1-(math.Log10(v)-math.Log10(yMin))/(math.Log10(yMax)-math.Log10(yMin)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">Commit-to-client latency against load</text>`+"\n", left)
	// Axes.
	fmt.Fprintf(&b, `<path d="M%d %d V%d H%d" stroke="black" fill="none"/>`+"\n", left, top, h-bottom, w-right)
	for i := 0; i <= 5; i++ {
		v := maxX * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/>`, x(v), h-bottom, x(v), h-bottom+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(v), h-bottom+18, num(v))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">changes/s</text>`+"\n", float64(left)+pw/2, h-8)
	for v := yMin; v <= yMax*1.0001; v *= 10 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, left, y(v), w-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(v)+4, trimFloat(v))
	}
	fmt.Fprintf(&b, `<text transform="translate(16 %.1f) rotate(-90)" text-anchor="middle">ms (log scale)</text>`+"\n", float64(top)+ph/2)
	// Targets.
	for _, t := range []struct {
		v     float64
		label string
	}{{5, "p50 target 5 ms"}, {25, "p99 target 25 ms"}} {
		if t.v < yMin || t.v > yMax {
			continue
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999" stroke-dasharray="4 4"/>`, left, y(t.v), w-right, y(t.v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="#666">%s</text>`+"\n", w-right+6, y(t.v)+4, t.label)
	}
	// Series.
	for _, s := range []struct {
		name, color string
		get         func(latPoint) float64
	}{{"p50", "#1f77b4", func(p latPoint) float64 { return p.P50 }}, {"p99", "#d62728", func(p latPoint) float64 { return p.P99 }}} {
		var d strings.Builder
		for i, p := range pts {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, x(p.Load), y(s.get(p)))
		}
		fmt.Fprintf(&b, `<path d="%s" stroke="%s" stroke-width="2" fill="none"/>`+"\n", strings.TrimSpace(d.String()), s.color)
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s %s ms at %s changes/s</title></circle>`+"\n",
				x(p.Load), y(s.get(p)), s.color, s.name, ms(s.get(p)), num(p.Load))
		}
		if len(pts) > 0 {
			p := pts[len(pts)-1]
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="%s">%s</text>`+"\n", x(p.Load)+8, y(s.get(p))+4, s.color, s.name)
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%g", v)
	return s
}
