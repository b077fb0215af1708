package outbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one relay. Gauges about the table (pending rows, oldest age)
// describe the whole outbox, so every relay reports the same value; sum
// the counters across relays, take max or any of the gauges.
type metrics struct {
	pending      prometheus.Gauge
	oldestAge    prometheus.Gauge
	published    prometheus.Counter
	duplicates   prometheus.Counter
	failed       prometheus.Counter
	publishErrs  prometheus.Counter
	dbErrs       prometheus.Counter
	pruned       prometheus.Counter
	partitions   prometheus.Gauge
	roundSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyrelay_outbox_rows_pending",
			Help: "Outbox rows waiting to be published (committed, state pending), all partitions."}),
		oldestAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyrelay_outbox_oldest_pending_age_seconds",
			Help: "Age of the oldest pending outbox row (0 when none)."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_outbox_published_total",
			Help: "Outbox rows published to JetStream (PubAck received), including duplicates the server dropped."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_outbox_duplicates_total",
			Help: "Publishes the stream reported as duplicates (a row re-published within the dedupe window)."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_outbox_failed_total",
			Help: "Outbox rows marked failed (invalid or never publishable)."}),
		publishErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_outbox_publish_errors_total",
			Help: "Transient publish errors (NATS unavailable, PubAck timeout); the rows are retried."}),
		dbErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_outbox_db_errors_total",
			Help: "PostgreSQL errors; the relay reconnects with backoff."}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "keyrelay_outbox_pruned_total",
			Help: "Sent rows deleted after the retention period."}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyrelay_outbox_partitions_owned",
			Help: "Outbox partitions this relay holds."}),
		roundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "keyrelay_outbox_round_seconds",
			Help:    "Time of one read-publish-mark round.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.pending, m.oldestAge, m.published, m.duplicates, m.failed,
		m.publishErrs, m.dbErrs, m.pruned, m.partitions, m.roundSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("outbox metrics: %w", err)
		}
	}
	return m, nil
}
