package outbox

import (
	"fmt"
	"regexp"
	"time"
)

// Defaults of Config. Every field's doc comment repeats its default.
const (
	// DefaultSchema holds the outbox table. A schema of its own keeps the
	// table away from LiteLLM's Prisma-managed public schema (prisma db push
	// drops tables it does not know).
	DefaultSchema = "keyrelay"
	// DefaultBatchSize is how many rows one relay reads per round.
	DefaultBatchSize = 500
	// DefaultPollInterval is the fallback when no notification arrives.
	DefaultPollInterval = time.Second
	// DefaultRetention is how long sent rows are kept before pruning.
	DefaultRetention = 24 * time.Hour
	// DefaultPruneInterval is how often a relay prunes sent rows.
	DefaultPruneInterval = time.Minute
	// DefaultPublishTimeout bounds the wait for one PubAck.
	DefaultPublishTimeout = 10 * time.Second
	// DefaultRebalanceInterval is how often a relay recounts its peers and
	// takes or gives back partitions.
	DefaultRebalanceInterval = time.Second
	// DefaultStatsInterval is how often the pending gauges are refreshed.
	DefaultStatsInterval = 5 * time.Second
	// DefaultInitialBackoff and DefaultMaxBackoff bound the retry delay
	// after a NATS or PostgreSQL error (exponential, with jitter).
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	// DefaultStandbyAfter is how long a relay keeps its partitions while
	// its NATS connection is down.
	DefaultStandbyAfter = 10 * time.Second
	// DefaultStream is the JetStream stream the relay publishes to.
	DefaultStream = "KEYRELAY_EVENTS"
)

// Partitions is the number of relay partitions rows are hashed into (by
// team and key, in the table definition). Relays share them out; more
// relays than partitions leaves the extra ones on standby.
const Partitions = 64

// Config configures a Relay (and Migrate, which reads DSN and Schema).
type Config struct {
	// DSN is the PostgreSQL connection string (URL or key=value), e.g.
	// postgres://keyrelay@db:5432/litellm. Required.
	DSN string
	// Schema holds the outbox table: lower-case letters, digits and '_',
	// at most 40 characters. Default: DefaultSchema ("keyrelay").
	Schema string
	// BatchSize is how many rows are read, published and marked per round.
	// Default: 500.
	BatchSize int
	// PollInterval is how long a relay waits for a LISTEN/NOTIFY wake-up
	// before it looks anyway. Default: 1s.
	PollInterval time.Duration
	// Retention is how long sent rows stay before pruning (failed rows are
	// kept until an operator removes them). Must be longer than the
	// stream's duplicate window only if you want to re-drive by hand.
	// Default: 24h.
	Retention time.Duration
	// PruneInterval is how often sent rows older than Retention are
	// deleted (by one relay at a time). Default: 1m.
	PruneInterval time.Duration
	// PublishTimeout bounds the wait for a PubAck. Default: 10s.
	PublishTimeout time.Duration
	// RebalanceInterval is how often a relay recounts live relays and
	// takes or releases partitions. Default: 1s.
	RebalanceInterval time.Duration
	// StatsInterval is how often the rows-pending and oldest-pending-age
	// gauges are refreshed. Default: 5s.
	StatsInterval time.Duration
	// InitialBackoff and MaxBackoff bound the retry delay after NATS or
	// PostgreSQL errors. Defaults: 100ms and 10s.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// StandbyAfter is how long a relay whose NATS connection is down keeps
	// its partitions; then it leaves (releasing them to the other relays)
	// until NATS is back. Default: 10s.
	StandbyAfter time.Duration
	// Stream is the stream every publish must land in (WithExpectStream).
	// Default: "KEYRELAY_EVENTS".
	Stream string
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,39}$`)

// setDefaults fills zero fields with their defaults.
func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.Retention, DefaultRetention)
	def(&c.PruneInterval, DefaultPruneInterval)
	def(&c.PublishTimeout, DefaultPublishTimeout)
	def(&c.RebalanceInterval, DefaultRebalanceInterval)
	def(&c.StatsInterval, DefaultStatsInterval)
	def(&c.InitialBackoff, DefaultInitialBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.StandbyAfter, DefaultStandbyAfter)
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
}

// Validate reports the first bad field after defaults are applied.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.DSN == "":
		return fmt.Errorf("outbox config: dsn is required")
	case !schemaRE.MatchString(c.Schema):
		return fmt.Errorf("outbox config: schema %q: want lower-case letters, digits and '_', at most 40, not starting with a digit", c.Schema)
	case c.BatchSize < 1 || c.BatchSize > 10000:
		return fmt.Errorf("outbox config: batch %d: want 1..10000", c.BatchSize)
	case c.PollInterval < 0, c.Retention < 0, c.PruneInterval < 0, c.PublishTimeout < 0,
		c.RebalanceInterval < 0, c.StatsInterval < 0, c.InitialBackoff < 0, c.MaxBackoff < 0, c.StandbyAfter < 0:
		return fmt.Errorf("outbox config: durations must not be negative")
	case c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("outbox config: max backoff %v is below the initial backoff %v", c.MaxBackoff, c.InitialBackoff)
	}
	return nil
}

// names are the SQL names derived from the schema (validated by schemaRE).
// schema and table are quoted identifiers: a valid name may still be an
// SQL keyword ("user", "order"). The channel, a longer word, needs no
// quotes.
type names struct {
	schema, table, channel string
}

func namesFor(schema string) names {
	q := `"` + schema + `"`
	return names{schema: q, table: q + ".keyrelay_outbox", channel: "keyrelay_outbox_" + schema}
}
