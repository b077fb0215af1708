package quota

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureBucket creates the heartbeat bucket, or updates it to cfg (zero
// fields take the defaults): one value per key (History 1), records
// removed cfg.TTL after their last write (bucket MaxAge) with a marker
// every watcher sees (LimitMarkerTTL, nats-server 2.11 or later), file
// storage, cfg.Replicas replicas. It is idempotent and safe to run from
// several processes at once; New calls it.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket,
		Description:    "keyrelay cluster-wide quotas: one heartbeat per member and quota (demand, acknowledged view), expiring after the TTL",
		History:        1,
		TTL:            cfg.TTL,
		LimitMarkerTTL: cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// record is what a member writes under <quota token>.<member token>, every
// heartbeat and whenever another member waits on its acknowledgement.
type record struct {
	// Quota and Member are the names the key encodes, for people reading
	// the bucket.
	Quota  string `json:"quota"`
	Member string `json:"member"`
	// Limit is the cluster-wide rate the member shares (perSecond ×
	// Margin); the members use the smallest limit any of them announces.
	Limit float64 `json:"limit"`
	// Demand is the rate the member wants (tokens per second); Limit when
	// its callers have to wait.
	Demand float64 `json:"demand"`
	// Bulk is the part of Demand only the member's bulk calls want: the
	// members serve every interactive part first (allocateTiered). A
	// record without it (a member of an earlier version) is all
	// interactive, as before priorities crossed members.
	Bulk float64 `json:"bulk,omitempty"`
	// Seen is the bucket sequence up to which the member has applied what
	// it watched: every share it had to lower because of those entries is
	// lowered. Others raise their share only once every member has seen
	// the change that lets them.
	Seen uint64 `json:"seen"`
	// Share is the member's current rate (informational).
	Share float64 `json:"share"`
}

// token maps any string to one KV key token, injectively. Strings made of
// letters, digits, '_', '-' and '/' are used as they are; any other (empty,
// or holding '.', ':', '=', spaces or non-ASCII) becomes "=" followed by
// its unpadded base64url form. A plain token never contains '=', so two
// strings never share a token.
func token(s string) string {
	plain := s != ""
	for i := 0; i < len(s) && plain; i++ {
		c := s[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '/'
	}
	if plain {
		return s
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(s))
}

// fromToken is the inverse of token.
func fromToken(tok string) (string, error) {
	if tok == "" {
		return "", errors.New("empty token")
	}
	if !strings.HasPrefix(tok, "=") {
		return tok, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[1:])
	if err != nil {
		return "", fmt.Errorf("bad encoded token: %w", err)
	}
	return string(b), nil
}

// recordKey is the key of member's record for a quota (both tokens).
func recordKey(quotaTok, memberTok string) string { return quotaTok + "." + memberTok }

// splitKey returns the quota and member tokens of a record key.
func splitKey(key string) (quotaTok, memberTok string, ok bool) {
	q, m, ok := strings.Cut(key, ".")
	if !ok || q == "" || m == "" || strings.Contains(m, ".") {
		return "", "", false
	}
	return q, m, true
}
