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
	share, left := fill(limit, demand)
	spread(share, left)
	return share
}

// allocateTiered is allocate with priorities: bulk[i] is the part of
// demand[i] only bulk calls want. The interactive parts (demand − bulk)
// are served first, max-min fairly over the whole limit; the bulk parts
// share what they leave, max-min fairly; what is left then is spread
// evenly as in allocate. So a member whose bulk job saturates a quota
// gets only what the others' gateway traffic does not want, wherever that
// traffic runs. With no bulk part anywhere it is allocate.
func allocateTiered(limit float64, demand, bulk []float64) []float64 {
	n := len(demand)
	inter := make([]float64, n)
	rest := make([]float64, n)
	for i, d := range demand {
		b := 0.0
		if i < len(bulk) && bulk[i] > 0 {
			b = bulk[i]
		}
		if !(d > 0) {
			d = 0
		}
		b = min(b, d)
		inter[i], rest[i] = d-b, b
	}
	share, left := fill(limit, inter)
	if len(share) == 0 {
		return share
	}
	more, left := fill(left, rest)
	for i := range share {
		share[i] += more[i]
	}
	spread(share, left)
	return share
}

// fill gives each member what it wants of limit, max-min fairly, and
// returns the shares and what is left (0 unless every demand is met).
func fill(limit float64, demand []float64) (share []float64, left float64) {
	n := len(demand)
	share = make([]float64, n)
	if n == 0 || !(limit > 0) || math.IsInf(limit, 0) {
		return share, 0
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
	left = limit
	for k, i := range order {
		fair := left / float64(n-k)
		if want[i] > fair {
			for _, j := range order[k:] {
				share[j] = fair
			}
			return share, 0
		}
		share[i] = want[i]
		left -= want[i]
	}
	return share, left
}

// spread adds left to the shares evenly.
func spread(share []float64, left float64) {
	if len(share) == 0 || !(left > 0) {
		return
	}
	extra := left / float64(len(share))
	for i := range share {
		share[i] += extra
	}
}
