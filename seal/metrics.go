package seal

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts a Sealer's work since it was made. It never holds a value,
// a key or a ciphertext.
type Stats struct {
	// Seals and Opens count values sealed and opened.
	Seals, Opens uint64
	// WrapCalls and UnwrapCalls count KMS requests (Generate counts as a
	// wrap), failed ones and retries included.
	WrapCalls, UnwrapCalls uint64
	// SealCacheHits and OpenCacheHits count Seals and Opens served by a
	// cached data key.
	SealCacheHits, OpenCacheHits uint64
	// Retries counts KMS calls made again; Throttles the throttled answers.
	Retries, Throttles uint64
	// SealErrors and OpenErrors count failed Seals and Opens.
	SealErrors, OpenErrors uint64
	// Rewraps counts values whose data key Rewrap wrapped again.
	Rewraps uint64
}

type counters struct {
	seals, opens, wrapCalls, unwrapCalls, sealHits, openHits atomic.Uint64
	retries, throttles, sealErrors, openErrors, rewraps      atomic.Uint64
}

// Stats returns the counters.
func (s *Sealer) Stats() Stats {
	c := &s.st
	return Stats{Seals: c.seals.Load(), Opens: c.opens.Load(), WrapCalls: c.wrapCalls.Load(), UnwrapCalls: c.unwrapCalls.Load(),
		SealCacheHits: c.sealHits.Load(), OpenCacheHits: c.openHits.Load(), Retries: c.retries.Load(), Throttles: c.throttles.Load(),
		SealErrors: c.sealErrors.Load(), OpenErrors: c.openErrors.Load(), Rewraps: c.rewraps.Load()}
}

var (
	descOps   = prometheus.NewDesc("keyrelay_seal_operations_total", "Values sealed, opened and rewrapped, and failures, by key wrapper.", []string{"wrapper", "op", "result"}, nil)
	descCalls = prometheus.NewDesc("keyrelay_seal_kms_calls_total", "Key wrapper (KMS) calls, retries included.", []string{"wrapper", "call"}, nil)
	descHits  = prometheus.NewDesc("keyrelay_seal_cache_hits_total", "Seals and opens served by a cached data key.", []string{"wrapper", "cache"}, nil)
	descRetry = prometheus.NewDesc("keyrelay_seal_kms_retries_total", "Key wrapper calls retried, and throttled answers.", []string{"wrapper", "reason"}, nil)
)

// Collector returns a Prometheus collector of the Sealer's Stats, labelled
// with the wrapper's name. Register it once per Sealer; for several
// sealers in one registry use CollectorOf.
func (s *Sealer) Collector() prometheus.Collector { return collector{s} }

// CollectorOf is one collector for several sealers (each wrapper's series
// told apart by its wrapper label): every sealer describes the same
// keyrelay_seal_* families, and a registry refuses a second collector with
// the same descriptions.
func CollectorOf(ss ...*Sealer) prometheus.Collector { return collector(ss) }

type collector []*Sealer

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOps, descCalls, descHits, descRetry} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c {
		s.collect(ch)
	}
}

func (s *Sealer) collect(ch chan<- prometheus.Metric) {
	st, w := s.Stats(), s.w.Name()
	m := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{w}, labels...)...)
	}
	m(descOps, st.Seals, "seal", "ok")
	m(descOps, st.SealErrors, "seal", "error")
	m(descOps, st.Opens, "open", "ok")
	m(descOps, st.OpenErrors, "open", "error")
	m(descOps, st.Rewraps, "rewrap", "ok")
	m(descCalls, st.WrapCalls, "wrap")
	m(descCalls, st.UnwrapCalls, "unwrap")
	m(descHits, st.SealCacheHits, "seal")
	m(descHits, st.OpenCacheHits, "open")
	m(descRetry, st.Retries, "retry")
	m(descRetry, st.Throttles, "throttled")
}
