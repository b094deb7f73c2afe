package main

import (
	"math"
	"slices"
)

// summary describes a sample. Percentiles interpolate linearly between
// the closest ranks (the median is p50); with 50 samples p99 lies between
// the two largest.
type summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	P50    float64 `json:"p50"`
	P99    float64 `json:"p99"`
	Mean   float64 `json:"mean"`
}

func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	p50 := percentile(s, 50)
	return summary{N: len(s), Median: p50, P50: p50, P99: percentile(s, 99),
		Min: s[0], Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// percentile of sorted s, 0 ≤ p ≤ 100.
func percentile(s []float64, p float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	r := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(r))
	hi := int(math.Ceil(r))
	return s[lo] + (s[hi]-s[lo])*(r-float64(lo))
}

// ratio is a/b, or 0 when either is missing (a failed path).
func ratio(a, b float64) float64 {
	if b == 0 || a == 0 {
		return 0
	}
	return a / b
}
