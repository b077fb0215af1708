package quota

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Defaults for Config fields left zero.
const (
	// BucketDefault is the KV bucket holding the members' heartbeats.
	BucketDefault = "KEYRELAY_QUOTAS"
	// ReplicasDefault: one server. Use 3 in a cluster.
	ReplicasDefault = 1
	// HeartbeatDefault is how often a member republishes its record.
	HeartbeatDefault = 500 * time.Millisecond
	// TTLDefault is how long the server keeps a member's record after its
	// last heartbeat: a member that died gives its share back after it.
	TTLDefault = 3 * time.Second
	// StaleAfterDefault is how long a member may go without seeing its own
	// heartbeat come back before it falls back to its conservative share.
	StaleAfterDefault = 1500 * time.Millisecond
	// MarginDefault is the fraction of a quota the members share.
	MarginDefault = 0.95
	// HorizonDefault is how far ahead a Wait may reserve a token.
	HorizonDefault = 250 * time.Millisecond
	// MinDemandDefault is the demand (tokens per second) an idle member
	// announces, so that its first calls find a share.
	MinDemandDefault = 1.0
	// HeadroomDefault multiplies a member's measured rate into the demand
	// it announces.
	HeadroomDefault = 1.2
	// IdleAfterDefault is how long a quota goes unused before the member
	// leaves it.
	IdleAfterDefault = 5 * time.Minute
	// CloseTimeoutDefault bounds the record deletions Close makes.
	CloseTimeoutDefault = 2 * time.Second
)

// kickGap is the least time between two heartbeats sent early (to
// acknowledge a change another member waits on).
const kickGap = 50 * time.Millisecond

// Config shapes a Manager. Zero fields take the defaults above. Every
// process sharing a bucket must use the same Heartbeat, TTL and StaleAfter
// (the bucket's TTL is the last one EnsureBucket set).
type Config struct {
	// Bucket names the KV bucket. Default: KEYRELAY_QUOTAS.
	Bucket string
	// Replicas of the bucket (1 on one server, 3 in a cluster). Default: 1.
	Replicas int
	// Member identifies this process in every quota; it must be unique
	// among the processes sharing the bucket (two processes with one id
	// count as one member and may together take two shares). Any string.
	// Default: <hostname>-<pid>-<8 random hex digits>.
	Member string
	// Heartbeat is how often the member republishes its demand and
	// acknowledgement for each quota it uses. Default: 500ms.
	Heartbeat time.Duration
	// TTL is the bucket's MaxAge: the server removes a member's record (and
	// tells every watcher) TTL after its last heartbeat, so a member that
	// died gives its share back within TTL plus one heartbeat. At least 1s
	// and 3 heartbeats. Default: 3s.
	TTL time.Duration
	// StaleAfter: a member that has not seen one of its heartbeats come
	// back through its watch for this long treats its view as stale and
	// falls back to its conservative share (see the package doc). At least
	// two heartbeats; StaleAfter plus one heartbeat must not exceed TTL,
	// so that a member cut off from NATS has fallen back before the others
	// drop it. Default: 1.5s.
	StaleAfter time.Duration
	// Margin is the fraction of perSecond the members share: with 0.95 a
	// quota of 50/s is shared as 47.5/s. In (0, 1]. Default: 0.95.
	Margin float64
	// Horizon is how far ahead of time a Wait may reserve a token; a member
	// raising its share waits this long after the acknowledgements it
	// needs, so that tokens the others reserved at their former share are
	// spent first. Default: 250ms.
	Horizon time.Duration
	// MinDemand (tokens per second) is the least demand a member
	// announces, even idle. Default: 1.
	MinDemand float64
	// Headroom multiplies the rate a member measured (when its callers did
	// not have to wait) into the demand it announces. At least 1.
	// Default: 1.2.
	Headroom float64
	// IdleAfter: a quota no Wait asked for this long is left (the member's
	// record is deleted). Default: 5m.
	IdleAfter time.Duration
	// CloseTimeout bounds the deletions of the member's records in Close.
	// Default: 2s.
	CloseTimeout time.Duration
	// Logger receives stale/recovered notices. Default: none.
	Logger *zap.Logger
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = BucketDefault
	}
	if c.Replicas <= 0 {
		c.Replicas = ReplicasDefault
	}
	if c.Member == "" {
		c.Member = defaultMember()
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = HeartbeatDefault
	}
	if c.TTL <= 0 {
		c.TTL = TTLDefault
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = StaleAfterDefault
	}
	if c.Margin == 0 {
		c.Margin = MarginDefault
	}
	if c.Horizon <= 0 {
		c.Horizon = HorizonDefault
	}
	if c.MinDemand <= 0 {
		c.MinDemand = MinDemandDefault
	}
	if c.Headroom == 0 {
		c.Headroom = HeadroomDefault
	}
	if c.IdleAfter <= 0 {
		c.IdleAfter = IdleAfterDefault
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = CloseTimeoutDefault
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// Validate names the first bad field (call it after the defaults are set;
// New does both).
func (c *Config) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("quota: Replicas (%d) must be between 1 and 5", c.Replicas)
	case c.TTL < time.Second:
		return fmt.Errorf("quota: TTL (%v) must be at least 1s", c.TTL)
	case c.TTL < 3*c.Heartbeat:
		return fmt.Errorf("quota: TTL (%v) must be at least 3 heartbeats (%v)", c.TTL, 3*c.Heartbeat)
	case c.StaleAfter < 2*c.Heartbeat:
		return fmt.Errorf("quota: StaleAfter (%v) must be at least 2 heartbeats (%v)", c.StaleAfter, 2*c.Heartbeat)
	case c.StaleAfter+c.Heartbeat > c.TTL:
		return fmt.Errorf("quota: StaleAfter (%v) plus Heartbeat (%v) must not exceed TTL (%v)", c.StaleAfter, c.Heartbeat, c.TTL)
	case !(c.Margin > 0 && c.Margin <= 1):
		return fmt.Errorf("quota: Margin (%v) must be in (0, 1]", c.Margin)
	case c.Horizon >= c.StaleAfter:
		return fmt.Errorf("quota: Horizon (%v) must be shorter than StaleAfter (%v)", c.Horizon, c.StaleAfter)
	case math.IsInf(c.MinDemand, 0) || math.IsNaN(c.MinDemand):
		return fmt.Errorf("quota: MinDemand (%v) must be finite", c.MinDemand)
	case !(c.Headroom >= 1) || math.IsInf(c.Headroom, 0):
		return fmt.Errorf("quota: Headroom (%v) must be at least 1", c.Headroom)
	}
	return nil
}

// defaultMember is <hostname>-<pid>-<8 random hex digits>, the hostname
// reduced to letters, digits, '_' and '-' so the member's key token stays
// readable.
func defaultMember() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, host)
	if host == "" {
		host = "keyrelay"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
