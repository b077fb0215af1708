package lookup

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Transport says how a lookup arrived (a metrics label).
type Transport int

// Transports.
const (
	HTTP Transport = iota
	NATS
	numTransports
)

func (t Transport) String() string {
	if t == NATS {
		return "nats"
	}
	return "http"
}

type outcome int

const (
	outcomeHit outcome = iota
	outcomeMiss
	outcomeRefreshed
	outcomeStale
	outcomeNegative
	outcomeError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"hit", "miss", "refreshed", "stale", "negative_hit", "error"}

// source says where an answer came from (a metrics label): memory alone,
// or a backend read it waited for.
type source int

const (
	fromCache source = iota
	fromBackend
	numSources
)

var sourceNames = [numSources]string{"cache", "backend"}

// Metrics are the lookup service's Prometheus metrics. They never carry a
// name or a value, only counts.
type Metrics struct {
	outcomes     [numTransports][numOutcomes]prometheus.Counter
	durations    [numTransports][numSources]prometheus.Observer
	rejected     *prometheus.CounterVec
	loads        *prometheus.CounterVec
	refusals     [2]prometheus.Counter // limitBackend, limitGlobal
	evictSize    prometheus.Counter
	evictExpired prometheus.Counter
	invalidated  *prometheus.CounterVec
	streamUp     prometheus.Gauge
	reg          prometheus.Registerer
}

// NewMetrics registers the metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	req := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyrelay_lookup_requests_total",
		Help: "Lookups answered, by transport and cache outcome (hit, miss, refreshed, stale, negative_hit, error)."},
		[]string{"transport", "outcome"})
	m := &Metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyrelay_lookup_rejected_total",
			Help: "Lookups refused before the cache, by transport and reason (bad_request, unauthorized, forbidden)."},
			[]string{"transport", "reason"}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyrelay_lookup_backend_loads_total",
			Help: "Backend reads made by the cache, by result (ok, not_found, forbidden, error)."}, []string{"result"}),
		evictSize: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_lookup_cache_evictions_total",
			Help: "Entries evicted to stay within max_entries and max_bytes.", ConstLabels: prometheus.Labels{"cause": "size"}}),
		evictExpired: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_lookup_cache_evictions_total",
			Help: "Entries evicted to stay within max_entries and max_bytes.", ConstLabels: prometheus.Labels{"cause": "expired"}}),
		invalidated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyrelay_lookup_invalidations_total",
			Help: "Confirmations applied to the cache, by status (undecodable: one that could not be decoded; the entries it may concern were dropped)."}, []string{"status"}),
		streamUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyrelay_lookup_invalidation_stream_up",
			Help: "1 while the confirmations stream is followed; 0 means cached values are revalidated before use."}),
		reg: reg,
	}
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyrelay_lookup_load_refusals_total",
		Help: "Loads that gave up waiting for a backend read slot (nothing read; the lookup answered 503 or a stale value), " +
			"by the limit waited for (max_loads_per_backend: the backend's share was in use; max_concurrent_loads: the whole pool was)."},
		[]string{"limit"})
	m.refusals[0] = refusals.WithLabelValues(limitBackend)
	m.refusals[1] = refusals.WithLabelValues(limitGlobal)
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "keyrelay_lookup_duration_seconds",
		Help:    "Time to answer a lookup inside the service (after authentication), by transport and source (cache: from memory; backend: a load or refresh waited for).",
		Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}},
		[]string{"transport", "source"})
	for t := Transport(0); t < numTransports; t++ {
		for o := outcome(0); o < numOutcomes; o++ {
			m.outcomes[t][o] = req.WithLabelValues(t.String(), outcomeNames[o])
		}
		for src := source(0); src < numSources; src++ {
			m.durations[t][src] = dur.WithLabelValues(t.String(), sourceNames[src])
		}
	}
	if reg != nil {
		reg.MustRegister(req, dur, m.rejected, m.loads, refusals, m.invalidated, m.streamUp)
		// The two eviction counters are one family told apart by a const label.
		reg.MustRegister(m.evictSize, m.evictExpired)
	}
	return m
}

// bind adds the gauges that read the cache itself.
func (m *Metrics) bind(s *Service) {
	m.streamUp.Set(1)
	if m.reg == nil {
		return
	}
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyrelay_lookup_cache_entries",
		Help: "Entries in the lookup cache (approximate)."}, func() float64 { return float64(s.cache.EstimatedSize()) }))
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyrelay_lookup_loads_in_flight",
		Help: "Backend reads in flight (at most max_concurrent_loads in all, and max_loads_per_backend on one backend)."},
		func() float64 { return float64(s.loads.inFlight()) }))
	_ = m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "keyrelay_lookup_cache_weight_bytes",
		Help: "Weight of the lookup cache: an upper bound of the bytes its entries hold (at most max_bytes)."},
		func() float64 { return float64(s.cache.WeightedSize()) }))
}

func (m *Metrics) outcome(t Transport, o outcome) { m.outcomes[t][o].Inc() }

// took records how long a lookup that started at start took to answer.
func (m *Metrics) took(t Transport, src source, start time.Time) {
	m.durations[t][src].Observe(time.Since(start).Seconds())
}

func (m *Metrics) reject(t Transport, e *Error) { m.rejected.WithLabelValues(t.String(), e.Code).Inc() }

func (m *Metrics) load(result string) { m.loads.WithLabelValues(result).Inc() }

// refused counts a load that gave up waiting for a slot under limit.
func (m *Metrics) refused(limit string) {
	if limit == limitBackend {
		m.refusals[0].Inc()
	} else {
		m.refusals[1].Inc()
	}
}
