package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/outbox"
	"github.com/keyrelay/keyrelay/worker"
)

// Thresholds above which `keyrelay status` lists a problem.
const (
	statusOldestUnackedProblem = time.Hour
	statusOutboxAgeProblem     = 5 * time.Minute
)

func statusCmd(g *globals) *cobra.Command {
	var (
		asJSON                  bool
		timeout                 time.Duration
		outboxDSN, outboxSchema string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "One screen for an operator: NATS, streams, lanes, DLQ, live workers, outbox, running jobs",
		Long: `status reads, and changes nothing:

  - the NATS server it is connected to (from its INFO), the servers it knows
    of, JetStream usage, and the nodes holding keyrelay's streams;
  - every keyrelay stream and KV bucket: messages, bytes, leader, and each
    replica's state and lag; a lane stream over 90% of its cap
    (streams.events_max_bytes) is a problem: its oldest events are not
    handled, and at the cap publishes are refused;
  - the consumers of the interactive and bulk lanes and of retirements:
    pending, ack pending, redelivered, and for the lanes the age of the
    oldest event delivered and not acknowledged;
  - the DLQ's depth;
  - the live keyrelay serve processes, from their heartbeats in
    KEYRELAY_WORKERS: id, version, host, start, lanes, readiness;
  - with --outbox-dsn (or KEYRELAY_OUTBOX_DSN), the outbox's pending rows and
    the age of the oldest;
  - the running bulk jobs and how far each has published;

then the problems it noticed. A part that cannot be read is reported as an
error in its place; the others are still shown.

Exit status: 0 when every part was read (whatever problems it lists), 1
when a part could not be read (after the report, text or JSON), so a
script never takes a partial report for a complete one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			conn, err := app.Connect(c, "keyrelay-status", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			r := gatherStatus(ctx, conn, statusOptions{OutboxDSN: outboxDSN, OutboxSchema: outboxSchema})
			out := newTermSafe(cmd.OutOrStdout())
			show := printStatusReport
			if asJSON {
				show = func(w io.Writer, r *statusReport) error { return printJSON(w, r) }
			}
			if err := show(out, r); err != nil {
				return err
			}
			if len(r.Errors) > 0 {
				parts := make([]string, 0, len(r.Errors))
				for p := range r.Errors {
					parts = append(parts, p)
				}
				sort.Strings(parts)
				return partialFailure("status: %d parts could not be read: %s", len(parts), strings.Join(parts, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.DurationVar(&timeout, "timeout", 15*time.Second, "give up reading after this long")
	f.StringVar(&outboxDSN, "outbox-dsn", os.Getenv("KEYRELAY_OUTBOX_DSN"), "PostgreSQL holding the outbox, to count its pending rows (env KEYRELAY_OUTBOX_DSN; empty: not read)")
	f.StringVar(&outboxSchema, "outbox-schema", outbox.DefaultSchema, "schema holding keyrelay_outbox")
	return cmd
}

type statusOptions struct {
	OutboxDSN, OutboxSchema string
}

// statusReport is what `keyrelay status` shows; --json prints it as is.
// Durations are in seconds.
type statusReport struct {
	Time      time.Time        `json:"time"`
	NATS      natsStatus       `json:"nats"`
	Streams   []streamStatus   `json:"streams"`
	Consumers []consumerStatus `json:"consumers"`
	// DLQDepth is the number of dead letters KEYRELAY_DLQ holds.
	DLQDepth uint64         `json:"dlq_depth"`
	Workers  []workerStatus `json:"workers"`
	// Lease is the writer lease (worker.ownership exclusive); nil when it
	// was never taken.
	Lease *leaseStatus `json:"writer_lease,omitempty"`
	// Outbox is nil when no DSN was given.
	Outbox *outboxStatus `json:"outbox,omitempty"`
	Jobs   []jobStatus   `json:"jobs"`
	// Problems are what an operator should look at, in plain words.
	Problems []string `json:"problems"`
	// Errors are the parts that could not be read, by part.
	Errors map[string]string `json:"errors,omitempty"`
}

type natsStatus struct {
	Server    string          `json:"server"`
	ServerID  string          `json:"server_id"`
	Version   string          `json:"version"`
	Cluster   string          `json:"cluster,omitempty"`
	URL       string          `json:"url"`
	Known     []string        `json:"known_servers"`
	JetStream *jetStreamUsage `json:"jetstream,omitempty"`
	// Nodes are the servers holding keyrelay's streams, as
	// the streams' cluster information names them.
	Nodes []nodeStatus `json:"nodes"`
}

type jetStreamUsage struct {
	Domain    string `json:"domain,omitempty"`
	Streams   int    `json:"streams"`
	Consumers int    `json:"consumers"`
	Store     uint64 `json:"store_bytes"`
	Memory    uint64 `json:"memory_bytes"`
	APIErrors uint64 `json:"api_errors"`
}

type nodeStatus struct {
	Name string `json:"name"`
	// Leads counts the keyrelay streams this node leads, Holds those it
	// holds a replica of (led ones included).
	Leads int `json:"leads"`
	Holds int `json:"holds"`
	// Offline: a stream's cluster information reports it offline.
	Offline bool `json:"offline"`
}

type streamStatus struct {
	Name     string `json:"name"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// MaxBytes is a lane stream's cap (streams.events_max_bytes), when it
	// has one.
	MaxBytes int64           `json:"max_bytes,omitempty"`
	Leader   string          `json:"leader"`
	Replicas []replicaStatus `json:"replicas,omitempty"`
}

type replicaStatus struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	Offline bool   `json:"offline"`
	// Lag is the operations it is behind the leader.
	Lag uint64 `json:"lag"`
	// ActiveSeconds is how long ago the leader last heard from it.
	ActiveSeconds float64 `json:"active_seconds"`
}

type consumerStatus struct {
	Lane        string `json:"lane"`
	Stream      string `json:"stream"`
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	Waiting     int    `json:"waiting"`
	Leader      string `json:"leader,omitempty"`
	// OldestUnackedSeconds: how long ago the oldest event delivered and not
	// acknowledged was published (lanes only; retirements wait for their
	// due time on purpose).
	OldestUnackedSeconds *float64 `json:"oldest_unacked_seconds,omitempty"`
}

type workerStatus struct {
	app.Presence
	// SeenSeconds is how long ago the server stored its last heartbeat.
	SeenSeconds float64 `json:"seen_seconds"`
}

// leaseStatus is the writer lease's record and the claims requests
// standing against it.
type leaseStatus struct {
	// Taken: the lease record exists (a worker ran exclusive).
	Taken bool `json:"taken"`
	// Holder is the process named in the record; empty once released.
	Holder string `json:"holder"`
	// WrittenSeconds is how long ago the record was last written (renewed).
	WrittenSeconds float64 `json:"written_seconds"`
	// TTLSeconds is the TTL the record states.
	TTLSeconds float64 `json:"ttl_seconds"`
	// Requests are the claims requests registered (recovery commands,
	// claims-mode workers): while one stands the holder claims keys.
	Requests []string `json:"claims_requests"`
}

type outboxStatus struct {
	Pending              int64   `json:"pending"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds"`
	Failed               int64   `json:"failed"`
}

type jobStatus struct {
	ID        string    `json:"id"`
	Published int       `json:"published"`
	Total     int       `json:"total"`
	Holder    string    `json:"holder,omitempty"`
	Updated   time.Time `json:"updated"`
}

// laneFullShare is the share of its cap at which `status` calls a lane
// stream full: its next events are refused, or about to be.
const laneFullShare = 0.98

// laneStreamProblem says what a lane stream over the share of its cap the
// workers trim it to (worker.TrimHighWater) means: they cannot trim it,
// since its oldest events are not handled yet, and at the cap the server
// refuses publishes. "" when it is below.
func laneStreamProblem(s streamStatus, discard jetstream.DiscardPolicy) string {
	share := float64(s.Bytes) / float64(s.MaxBytes)
	switch {
	case share <= worker.TrimHighWater:
		return ""
	case share >= laneFullShare && discard == jetstream.DiscardNew:
		return fmt.Sprintf("stream %s is full (%s of %s, streams.events_max_bytes) of events not yet handled: publishes to it are refused "+
			"(publishers get an error, the outbox relay keeps its rows, jobs wait); start workers or see why they do not keep up", s.Name, sizeOf(s.Bytes), sizeOf(uint64(s.MaxBytes)))
	default:
		return fmt.Sprintf("stream %s holds %s of its %s (streams.events_max_bytes), over the %.0f%% the workers trim it to: its oldest events are not handled yet "+
			"(no worker, or far behind); at the cap publishes are refused", s.Name, sizeOf(s.Bytes), sizeOf(uint64(s.MaxBytes)), 100*worker.TrimHighWater)
	}
}

// statusLanes are the consumers status reports, by the lane they serve.
var statusLanes = []struct{ lane, stream, consumer string }{
	{"interactive", worker.EventsStream, worker.ConsumerName},
	{"bulk", worker.BulkStream, worker.BulkConsumerName},
	{"retire", worker.RetireStream, worker.RetireConsumerName},
	// Key events whose backend keeps failing wait parked, out of their
	// lane's pending set (worker/park.go).
	{"interactive-parked", worker.ParkedStream, worker.ParkedConsumerName},
	{"bulk-parked", worker.ParkedStream, worker.ParkedBulkConsumerName},
}

// gatherStatus reads everything status shows. It never fails: a part that
// cannot be read is recorded in Errors.
func gatherStatus(ctx context.Context, conn *app.Conn, o statusOptions) *statusReport {
	now := time.Now()
	r := &statusReport{Time: now.UTC(), Streams: []streamStatus{}, Consumers: []consumerStatus{}, Workers: []workerStatus{},
		Jobs: []jobStatus{}, Problems: []string{}}
	fail := func(part string, err error) {
		if r.Errors == nil {
			r.Errors = map[string]string{}
		}
		r.Errors[part] = err.Error()
		r.Problems = append(r.Problems, fmt.Sprintf("%s could not be read: %v", part, err))
	}
	nc, js := conn.NC, conn.JS

	r.NATS = natsStatus{Server: nc.ConnectedServerName(), ServerID: nc.ConnectedServerId(), Version: nc.ConnectedServerVersion(),
		Cluster: nc.ConnectedClusterName(), URL: nc.ConnectedUrlRedacted(), Known: nc.Servers(), Nodes: []nodeStatus{}}
	if ai, err := js.AccountInfo(ctx); err != nil {
		fail("jetstream account", err)
	} else {
		r.NATS.JetStream = &jetStreamUsage{Domain: ai.Domain, Streams: ai.Streams, Consumers: ai.Consumers,
			Store: ai.Store, Memory: ai.Memory, APIErrors: ai.API.Errors}
	}

	nodes := map[string]*nodeStatus{}
	node := func(name string) *nodeStatus {
		if nodes[name] == nil {
			nodes[name] = &nodeStatus{Name: name}
		}
		return nodes[name]
	}
	offline := map[string][]string{} // node -> streams reporting it offline
	lister := js.ListStreams(ctx)
	for si := range lister.Info() {
		if !strings.Contains(si.Config.Name, "KEYRELAY") {
			continue
		}
		s := streamStatus{Name: si.Config.Name, Messages: si.State.Msgs, Bytes: si.State.Bytes}
		cl := si.Cluster
		if (cl == nil || cl.Leader == "") && r.NATS.Cluster == "" {
			// A server outside any cluster holds every stream itself.
			cl = &jetstream.ClusterInfo{Leader: r.NATS.Server}
		}
		if cl != nil {
			s.Leader = cl.Leader
			if cl.Leader != "" {
				node(cl.Leader).Leads++
				node(cl.Leader).Holds++
			} else {
				r.Problems = append(r.Problems, fmt.Sprintf("stream %s has no leader", s.Name))
			}
			for _, p := range cl.Replicas {
				s.Replicas = append(s.Replicas, replicaStatus{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag,
					ActiveSeconds: p.Active.Seconds()})
				n := node(p.Name)
				n.Holds++
				switch {
				case p.Offline:
					n.Offline = true
					offline[p.Name] = append(offline[p.Name], s.Name)
				case !p.Current:
					r.Problems = append(r.Problems, fmt.Sprintf("stream %s: replica %s is behind (lag %d)", s.Name, p.Name, p.Lag))
				}
			}
		}
		if s.Name == worker.DLQStream {
			r.DLQDepth = s.Messages
		}
		if (s.Name == worker.EventsStream || s.Name == worker.BulkStream) && si.Config.MaxBytes > 0 {
			s.MaxBytes = si.Config.MaxBytes
			if p := laneStreamProblem(s, si.Config.Discard); p != "" {
				r.Problems = append(r.Problems, p)
			}
		}
		r.Streams = append(r.Streams, s)
	}
	if err := lister.Err(); err != nil {
		fail("streams", err)
	}
	sort.Slice(r.Streams, func(i, j int) bool { return r.Streams[i].Name < r.Streams[j].Name })
	for _, n := range nodes {
		r.NATS.Nodes = append(r.NATS.Nodes, *n)
	}
	sort.Slice(r.NATS.Nodes, func(i, j int) bool { return r.NATS.Nodes[i].Name < r.NATS.Nodes[j].Name })
	for _, n := range r.NATS.Nodes {
		if ss := offline[n.Name]; len(ss) > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("node %s is offline: it holds replicas of %s", n.Name, plural(len(ss), "keyrelay stream")))
		}
	}
	if r.DLQDepth > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("the DLQ holds %s (keyrelay dlq list)", plural(int(r.DLQDepth), "dead letter")))
	}

	for _, l := range statusLanes {
		cons, err := js.Consumer(ctx, l.stream, l.consumer)
		if err != nil {
			fail("consumer "+l.consumer, err)
			continue
		}
		info := cons.CachedInfo()
		cs := consumerStatus{Lane: l.lane, Stream: l.stream, Name: l.consumer, Pending: info.NumPending, AckPending: info.NumAckPending,
			Redelivered: info.NumRedelivered, Waiting: info.NumWaiting}
		if info.Cluster != nil {
			cs.Leader = info.Cluster.Leader
		}
		if cs.Leader == "" && r.NATS.Cluster == "" {
			cs.Leader = r.NATS.Server
		}
		if l.stream == worker.ParkedStream && info.NumPending+uint64(info.NumAckPending) > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%d parked events of the %s are due or being retried, and more may wait in %s: a backend keeps failing (see the worker log and /readyz)",
				info.NumPending+uint64(info.NumAckPending), strings.TrimSuffix(l.lane, "-parked")+" lane", worker.ParkedStream))
		}
		if l.stream != worker.RetireStream && l.stream != worker.ParkedStream {
			if age, err := worker.OldestUnackedAge(ctx, js, info, now); err == nil {
				secs := age.Seconds()
				cs.OldestUnackedSeconds = &secs
				if age > statusOldestUnackedProblem {
					r.Problems = append(r.Problems, fmt.Sprintf("the %s lane's oldest unacknowledged event was published %v ago", l.lane, age.Round(time.Second)))
				}
			}
		}
		r.Consumers = append(r.Consumers, cs)
	}

	ps, err := app.ListPresence(ctx, js)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		r.Problems = append(r.Problems, "no keyrelay serve process has announced itself (bucket "+app.WorkersBucket+" missing)")
	case err != nil:
		fail("workers", err)
	default:
		versions := map[string]bool{}
		for _, p := range ps {
			r.Workers = append(r.Workers, workerStatus{Presence: p, SeenSeconds: max(now.Sub(p.Seen), 0).Seconds()})
			versions[p.Version] = true
			if !p.Ready {
				r.Problems = append(r.Problems, fmt.Sprintf("worker %s is not ready: %s", p.ID, p.Reason))
			}
		}
		if len(ps) == 0 {
			r.Problems = append(r.Problems, "no live keyrelay serve process (none beat in the last "+app.PresenceTTL.String()+")")
		}
		if len(versions) > 1 {
			vs := make([]string, 0, len(versions))
			for v := range versions {
				vs = append(vs, v)
			}
			sort.Strings(vs)
			r.Problems = append(r.Problems, "workers run different versions: "+strings.Join(vs, ", "))
		}
	}

	if ls, err := readLease(ctx, js, now); err != nil {
		fail("writer lease", err)
	} else if ls != nil {
		r.Lease = ls
		if ls.Holder != "" && ls.WrittenSeconds > 2*ls.TTLSeconds {
			r.Problems = append(r.Problems, fmt.Sprintf("the writer lease of %s was last renewed %s ago (ttl %s): its holder is gone and no standby took over",
				ls.Holder, secs(ls.WrittenSeconds), secs(ls.TTLSeconds)))
		}
	}

	if o.OutboxDSN != "" {
		if st, err := readOutbox(ctx, o); err != nil {
			fail("outbox", err)
		} else {
			r.Outbox = &outboxStatus{Pending: st.Pending, OldestPendingSeconds: st.OldestPending.Seconds(), Failed: st.Failed}
			if st.OldestPending > statusOutboxAgeProblem {
				r.Problems = append(r.Problems, fmt.Sprintf("the oldest pending outbox row is %v old", st.OldestPending.Round(time.Second)))
			}
			if st.Failed > 0 {
				r.Problems = append(r.Problems, fmt.Sprintf("%d outbox rows failed (keyrelay outbox status)", st.Failed))
			}
		}
	}

	store, err := jobs.OpenStore(ctx, js)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		// No job was ever created.
	case err != nil:
		fail("jobs", err)
	default:
		all, err := store.List(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			fail("jobs", err)
		}
		for _, j := range all {
			if j.State == jobs.StateRunning {
				r.Jobs = append(r.Jobs, jobStatus{ID: j.ID, Published: j.Cursor, Total: j.Total, Holder: j.Holder, Updated: j.Updated})
			}
		}
	}
	return r
}

// readLease reads the writer lease record and the claims requests; nil
// when the lease was never taken.
func readLease(ctx context.Context, js jetstream.JetStream, now time.Time) (*leaseStatus, error) {
	kv, err := js.KeyValue(ctx, worker.OwnershipBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ls := &leaseStatus{Requests: []string{}}
	prefix := worker.WriterLeaseKey + ".claims."
	keys, err := kv.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		return nil, err
	}
	for k := range keys.Keys() {
		ls.Requests = append(ls.Requests, strings.TrimPrefix(k, prefix))
	}
	sort.Strings(ls.Requests)
	e, err := kv.Get(ctx, worker.WriterLeaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		if len(ls.Requests) == 0 {
			return nil, nil
		}
		return ls, nil
	case err != nil:
		return nil, err
	}
	var rec struct {
		Holder string `json:"holder"`
		TTLMs  int64  `json:"ttl_ms"`
	}
	if len(e.Value()) > 1024 || json.Unmarshal(e.Value(), &rec) != nil {
		rec.Holder = "(unreadable record)"
	}
	ls.Taken, ls.Holder, ls.TTLSeconds = true, rec.Holder, float64(rec.TTLMs)/1000
	ls.WrittenSeconds = max(now.Sub(e.Created()), 0).Seconds()
	return ls, nil
}

func readOutbox(ctx context.Context, o statusOptions) (*outbox.Status, error) {
	conn, err := connectPG(ctx, o.OutboxDSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return outbox.ReadStatus(ctx, conn, o.OutboxSchema, 0)
}

// printStatusReport writes the report for a terminal.
func printStatusReport(w io.Writer, r *statusReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	n := r.NATS
	p("keyrelay status at %s\n\n", r.Time.Format(time.RFC3339))
	p("NATS: connected to %s (nats-server %s", n.Server, n.Version)
	if n.Cluster != "" {
		p(", cluster %s", n.Cluster)
	}
	p(") at %s\n", n.URL)
	if len(n.Known) > 1 {
		p("  servers known: %s\n", strings.Join(n.Known, ", "))
	}
	if u := n.JetStream; u != nil {
		p("  JetStream: %d streams, %d consumers, %s on disk, %s in memory", u.Streams, u.Consumers, sizeOf(u.Store), sizeOf(u.Memory))
		if u.Domain != "" {
			p(", domain %s", u.Domain)
		}
		p("\n")
	}
	if len(n.Nodes) > 0 {
		p("\nNODE\tLEADS\tHOLDS\tSTATE\n")
		for _, nd := range n.Nodes {
			p("%s\t%d\t%d\t%s\n", nd.Name, nd.Leads, nd.Holds, map[bool]string{true: "offline", false: "ok"}[nd.Offline])
		}
	}

	p("\nSTREAM\tMESSAGES\tBYTES\tLEADER\tREPLICAS\n")
	for _, s := range r.Streams {
		reps := make([]string, 0, len(s.Replicas))
		for _, rp := range s.Replicas {
			state := "current"
			switch {
			case rp.Offline:
				state = "offline"
			case !rp.Current:
				state = fmt.Sprintf("lag %d", rp.Lag)
			}
			reps = append(reps, rp.Name+" "+state)
		}
		p("%s\t%d\t%s\t%s\t%s\n", s.Name, s.Messages, sizeOf(s.Bytes), orDash(s.Leader), orDash(strings.Join(reps, ", ")))
	}

	p("\nCONSUMER\tLANE\tPENDING\tACK PENDING\tREDELIVERED\tOLDEST UNACKED\tLEADER\n")
	for _, c := range r.Consumers {
		oldest := "-"
		if c.OldestUnackedSeconds != nil && *c.OldestUnackedSeconds > 0 {
			oldest = (time.Duration(*c.OldestUnackedSeconds * float64(time.Second))).Round(time.Second).String()
		}
		p("%s\t%s\t%d\t%d\t%d\t%s\t%s\n", c.Name, c.Lane, c.Pending, c.AckPending, c.Redelivered, oldest, orDash(c.Leader))
	}
	p("\nDLQ: %s\n", plural(int(r.DLQDepth), "dead letter"))

	p("\nWORKERS: %d live\n", len(r.Workers))
	if len(r.Workers) > 0 {
		p("ID\tVERSION\tHOST\tUP\tLANES\tLOOKUP\tREADY\tSEEN\n")
		for _, wk := range r.Workers {
			ready := "yes"
			if !wk.Ready {
				ready = "no: " + wk.Reason
			}
			p("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s ago\n", wk.ID, wk.Version, wk.Host, r.Time.Sub(wk.Started).Round(time.Second),
				orDash(lanesOf(wk.Presence)), orDash(strings.Join(wk.Lookup, ",")), ready, secs(wk.SeenSeconds))
		}
	}

	switch l := r.Lease; {
	case l == nil || !l.Taken:
		p("\nWRITER LEASE: never taken (every worker writes by claims)\n")
	case l.Holder == "":
		p("\nWRITER LEASE: released %s ago\n", secs(l.WrittenSeconds))
	default:
		p("\nWRITER LEASE: held by %s, renewed %s ago (ttl %s)\n", l.Holder, secs(l.WrittenSeconds), secs(l.TTLSeconds))
	}
	if l := r.Lease; l != nil && len(l.Requests) > 0 {
		p("  claims requests (the holder claims keys while any stands): %s\n", strings.Join(l.Requests, ", "))
	}

	switch o := r.Outbox; {
	case o != nil:
		p("\nOUTBOX: %d pending, oldest %s; %d failed\n", o.Pending, secs(o.OldestPendingSeconds), o.Failed)
	case r.Errors["outbox"] != "":
		p("\nOUTBOX: not read: %s\n", r.Errors["outbox"])
	default:
		p("\nOUTBOX: not read (--outbox-dsn or KEYRELAY_OUTBOX_DSN); its relays export keyrelay_outbox_rows_pending and keyrelay_outbox_oldest_pending_age_seconds\n")
	}

	p("\nJOBS: %d running\n", len(r.Jobs))
	if len(r.Jobs) > 0 {
		p("JOB\tPUBLISHED\tPUBLISHER\tSAVED\n")
		for _, j := range r.Jobs {
			pct := 0.0
			if j.Total > 0 {
				pct = 100 * float64(j.Published) / float64(j.Total)
			}
			p("%s\t%d/%d (%.0f%%)\t%s\t%s ago\n", j.ID, j.Published, j.Total, pct, orDash(j.Holder), r.Time.Sub(j.Updated).Round(time.Second))
		}
	}

	if len(r.Problems) == 0 {
		p("\nPROBLEMS: none\n")
	} else {
		p("\nPROBLEMS: %d\n", len(r.Problems))
		for _, pr := range r.Problems {
			p("  - %s\n", pr)
		}
	}
	return tw.Flush()
}

// lanesOf says which lanes a process consumes, with their slots.
func lanesOf(p app.Presence) string {
	out := make([]string, 0, len(p.Lanes))
	for _, l := range p.Lanes {
		switch l {
		case "interactive":
			out = append(out, fmt.Sprintf("%s %d", l, p.Concurrency))
		case "bulk":
			out = append(out, fmt.Sprintf("%s %d", l, p.BulkConcurrency))
		default:
			out = append(out, l)
		}
	}
	return strings.Join(out, ", ")
}

// plural writes n and the noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(100 * time.Millisecond).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sizeOf prints a byte count in binary units.
func sizeOf(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTP"[exp])
}
