package quota

import (
	"math"
	"sort"
)

// allocate splits limit between members wanting demand[i] tokens per
// second each, max-min fairly: a member wanting less than an equal share
// of what is left gets what it wants, and the rest is split evenly among
// the others. When every demand is met, what is left is spread evenly over
// everyone (a member's next burst of demand then finds room at once).
// Demands are clamped to [0, limit] (NaN counts as 0). The shares sum to
// limit (to rounding) whenever there is at least one member, and every
// member computes the same shares from the same records: the result
// depends only on the inputs and their order, and ties are broken by
// index.
func allocate(limit float64, demand []float64) []float64 {
	n := len(demand)
	share := make([]float64, n)
	if n == 0 || !(limit > 0) || math.IsInf(limit, 0) {
		return share
	}
	want := make([]float64, n)
	for i, d := range demand {
		switch {
		case !(d > 0):
			want[i] = 0
		case d > limit:
			want[i] = limit
		default:
			want[i] = d
		}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return want[order[a]] < want[order[b]] })
	left := limit
	for k, i := range order {
		fair := left / float64(n-k)
		if want[i] > fair {
			for _, j := range order[k:] {
				share[j] = fair
			}
			return share
		}
		share[i] = want[i]
		left -= want[i]
	}
	extra := left / float64(n)
	for i := range share {
		share[i] += extra
	}
	return share
}
