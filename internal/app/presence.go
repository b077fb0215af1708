package app

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/kvlist"
	"github.com/keyrelay/keyrelay/settings"
)

// What a `keyrelay serve` process says about itself: a heartbeat record in
// the KV bucket WorkersBucket (read by `keyrelay status`), and on /metrics
// its build (keyrelay_build_info) and its cluster-wide quota shares
// (keyrelay_quota_*).
const (
	// WorkersBucket holds one record per live `keyrelay serve` process,
	// under its id. Records are written every PresenceEvery and expire
	// PresenceTTL after the last one (the bucket's MaxAge), so a killed
	// process disappears by itself; a process that stops deletes its own.
	WorkersBucket = "KEYRELAY_WORKERS"
	PresenceEvery = 5 * time.Second
	PresenceTTL   = 15 * time.Second
	// presenceCheck is how often readiness is looked at, to announce a
	// change without waiting for the next beat.
	presenceCheck = 250 * time.Millisecond
)

// Presence is one serve process's heartbeat record. It never holds a
// secret, a token or a configuration value beyond the listed ones.
type Presence struct {
	// ID names the process: host-pid-random.
	ID      string `json:"id"`
	Version string `json:"version"`
	Host    string `json:"host"`
	PID     int    `json:"pid"`
	// Started is when the process started serving; Beat when it wrote this
	// record (its clock).
	Started time.Time `json:"started"`
	Beat    time.Time `json:"beat"`
	// Lanes the process consumes (interactive, bulk, retire; none with the
	// worker disabled), with its slots per lane.
	Lanes           []string `json:"lanes,omitempty"`
	Concurrency     int      `json:"concurrency,omitempty"`
	BulkConcurrency int      `json:"bulk_concurrency,omitempty"`
	// Lookup lists the lookup transports it serves ("http", "nats").
	Lookup []string `json:"lookup,omitempty"`
	// Ready and Reason are /readyz's answer: its first line when not ready.
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	// Seen is when the server stored this record (the server's clock);
	// set by ListPresence, not written.
	Seen time.Time `json:"seen,omitzero"`
}

// ListPresence returns the live serve processes' records, by id. The error
// wraps jetstream.ErrBucketNotFound when no process ever announced itself.
func ListPresence(ctx context.Context, js jetstream.JetStream) ([]Presence, error) {
	kv, err := js.KeyValue(ctx, WorkersBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", WorkersBucket, err)
	}
	keys, err := kvlist.Keys(ctx, js, kv, "")
	if err != nil {
		return nil, err
	}
	var out []Presence
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired or deleted meanwhile
		}
		var p Presence
		if json.Unmarshal(e.Value(), &p) != nil {
			continue
		}
		p.Seen = e.Created()
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Version is this build's version: the module version it was built at,
// else its VCS revision (with "+dirty" for a modified tree), else "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return "devel-" + rev
}

var kvKeyUnsafe = regexp.MustCompile(`[^-_=.a-zA-Z0-9]`)

// newPresence describes this process as c configures it.
func newPresence(c *settings.Config) Presence {
	host, _ := os.Hostname()
	p := Presence{Version: Version(), Host: host, PID: os.Getpid(), Started: time.Now().UTC()}
	p.ID = kvKeyUnsafe.ReplaceAllString(fmt.Sprintf("%s-%d-%s", host, p.PID, uuid.NewString()[:8]), "_")
	w := c.Keyrelay.Worker
	if w.Enabled == nil || *w.Enabled {
		p.Concurrency = w.Concurrency
		p.BulkConcurrency = w.BulkConcurrency
		if p.BulkConcurrency == 0 {
			p.BulkConcurrency = p.Concurrency
		}
		p.Lanes = []string{"interactive"}
		if p.BulkConcurrency > 0 {
			p.Lanes = append(p.Lanes, "bulk")
		} else {
			p.BulkConcurrency = 0
		}
		p.Lanes = append(p.Lanes, "retire")
	}
	if l := c.Keyrelay.Lookup; l.HTTPEnabled() {
		p.Lookup = append(p.Lookup, "http")
	}
	if l := c.Keyrelay.Lookup; l.NATSEnabled(c.Keyrelay.NATS.IsEmbedded()) {
		p.Lookup = append(p.Lookup, "nats")
	}
	return p
}

// startPresence registers the process metrics on reg and writes this
// process's record to WorkersBucket every PresenceEvery (creating the
// bucket when missing; a failed write is tried again at the next beat). It
// beats until the returned stop is called, which deletes the record. rd
// gives the readiness the record carries; quotas may be nil.
func startPresence(ctx context.Context, c *settings.Config, js jetstream.JetStream, reg prometheus.Registerer, rd *readiness, quotas *lateQuotas, log *zap.Logger) (stop func()) {
	p := newPresence(c)
	log = log.Named("presence")
	registerProcessMetrics(reg, p.Version, quotas, log)
	replicas := max(c.Keyrelay.Streams.Replicas, 1)
	// Beats go on through the shutdown grace, until stop.
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var (
		mu sync.Mutex
		kv jetstream.KeyValue
	)
	done := make(chan struct{})
	state := func() (bool, string) {
		if rd == nil {
			return true, ""
		}
		ok, why := rd.report()
		if ok {
			return true, ""
		}
		why, _, _ = strings.Cut(why, "\n")
		return false, why
	}
	// beat writes the record; it reports whether it did.
	beat := func(ready bool, reason string) bool {
		actx, acancel := context.WithTimeout(bctx, PresenceEvery)
		defer acancel()
		mu.Lock()
		b := kv
		mu.Unlock()
		if b == nil {
			var err error
			b, err = js.CreateOrUpdateKeyValue(actx, jetstream.KeyValueConfig{Bucket: WorkersBucket,
				Description: "keyrelay serve processes: one heartbeat record each, expiring when it stops beating",
				History:     1, TTL: PresenceTTL, Storage: jetstream.MemoryStorage, Replicas: replicas})
			if err != nil {
				log.Debug("presence bucket not ready", zap.Error(err))
				return false
			}
			mu.Lock()
			kv = b
			mu.Unlock()
		}
		rec := p
		rec.Beat, rec.Ready, rec.Reason = time.Now().UTC(), ready, reason
		data, _ := json.Marshal(rec)
		if _, err := b.Put(actx, p.ID, data); err != nil {
			log.Debug("presence not written", zap.Error(err))
			return false
		}
		return true
	}
	go func() {
		defer close(done)
		// A beat every PresenceEvery, and at once when readiness changes
		// (checked every presenceCheck).
		t := time.NewTicker(presenceCheck)
		defer t.Stop()
		var last time.Time
		lastReady, lastReason := false, "\x00"
		for {
			ready, reason := state()
			if time.Since(last) >= PresenceEvery || ready != lastReady || reason != lastReason {
				if beat(ready, reason) {
					lastReady, lastReason = ready, reason
				}
				last = time.Now()
			}
			select {
			case <-bctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	log.Info("announcing this process", zap.String("bucket", WorkersBucket), zap.String("id", p.ID), zap.String("version", p.Version))
	return func() {
		cancel()
		<-done
		mu.Lock()
		b := kv
		mu.Unlock()
		if b == nil {
			return
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		_ = b.Delete(dctx, p.ID)
	}
}

// registerProcessMetrics adds keyrelay_build_info and, with cluster-wide
// quotas, the keyrelay_quota_* metrics. A name already registered (by
// another part of the process) is logged and left as it is.
func registerProcessMetrics(reg prometheus.Registerer, version string, quotas *lateQuotas, log *zap.Logger) {
	if reg == nil {
		return
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyrelay_build_info",
		Help:        "Always 1; the labels name the running build (version) and its Go version.",
		ConstLabels: prometheus.Labels{"version": version, "go_version": runtime.Version()}})
	info.Set(1)
	cs := []prometheus.Collector{info}
	if quotas != nil {
		cs = append(cs, newQuotaCollector(quotas))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			log.Warn("metrics not registered", zap.Error(err))
		}
	}
}

// quotaCollector exports the cluster-wide quotas this process uses, as
// quota.Manager.Stats reports them, labelled by quota name (a backend's
// account, project or vault and the kind of call, e.g.
// "aws_secret_manager/123456789012/us-east-1/write"). Nothing is exported
// before the quota manager runs.
type quotaCollector struct {
	q                                                 *lateQuotas
	limit, share, demand, bulk, members, taken, stale *prometheus.Desc
}

func newQuotaCollector(q *lateQuotas) *quotaCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"quota"}, nil)
	}
	return &quotaCollector{q: q,
		limit:   d("keyrelay_quota_limit_per_second", "A cluster-wide provider quota's rate shared by every member (perSecond × keyrelay.quotas.margin, the lowest any member announces)."),
		share:   d("keyrelay_quota_share_per_second", "The rate of a quota this process may take now (its share of the limit: interactive demand first, max-min fairly, then bulk)."),
		demand:  d("keyrelay_quota_demand_per_second", "The demand this process announces for a quota (the limit while its callers wait, else 1.2 × its measured rate)."),
		bulk:    d("keyrelay_quota_bulk_demand_per_second", "The part of this process's demand for a quota only its bulk calls want: every member's interactive demand is served before it."),
		members: d("keyrelay_quota_members", "Live processes sharing a quota, as this process sees them."),
		taken:   d("keyrelay_quota_tokens_taken_total", "Tokens this process took from a quota (provider calls let through)."),
		stale:   d("keyrelay_quota_stale", "1 while this process's view of a quota is stale (NATS unreachable or slow) and it takes the conservative share."),
	}
}

func (c *quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.limit, c.share, c.demand, c.bulk, c.members, c.taken, c.stale} {
		ch <- d
	}
}

func (c *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.q.ready:
	default:
		return
	}
	for _, s := range c.q.m.Stats() {
		stale := 0.0
		if s.Stale {
			stale = 1
		}
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, s.Limit, s.Name)
		ch <- prometheus.MustNewConstMetric(c.share, prometheus.GaugeValue, s.Share, s.Name)
		ch <- prometheus.MustNewConstMetric(c.demand, prometheus.GaugeValue, s.Demand, s.Name)
		ch <- prometheus.MustNewConstMetric(c.bulk, prometheus.GaugeValue, s.Bulk, s.Name)
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(s.Members), s.Name)
		ch <- prometheus.MustNewConstMetric(c.taken, prometheus.CounterValue, float64(s.Taken), s.Name)
		ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, stale, s.Name)
	}
}
