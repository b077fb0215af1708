package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// CorruptEntryError is an entry of one of keyrelay's KV buckets (the
// ledger, the teams bucket) that cannot be used: it does not decode, or a
// teams entry names another team than its key. It is keyrelay's data, not
// the event's fault: an event that needs the entry is handed back without
// spending its budget (never dead-lettered) until an operator repairs or
// deletes the entry. Its message names the bucket and the key and says
// what is wrong without quoting the value.
type CorruptEntryError struct {
	Bucket string
	Key    string
	// Fault says what is wrong, never with the entry's bytes.
	Fault string
}

func (e *CorruptEntryError) Error() string {
	return fmt.Sprintf("%s entry %s is corrupt: %s", e.Bucket, e.Key, e.Fault)
}

// decodeFault describes a JSON decoding error without the decoded bytes:
// encoding/json's messages may quote them (a character, or a string that
// failed to parse as a time).
func decodeFault(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON (at byte %d)", se.Offset)
	case errors.As(err, &te) && te.Field != "":
		return fmt.Sprintf("member %s does not decode as %s", te.Field, te.Type)
	case errors.As(err, &te):
		return fmt.Sprintf("does not decode as %s", te.Type)
	}
	return "does not decode"
}

// corruptLogEvery bounds the error logged for one corrupt entry: every
// event that needs it reads it again on each of its deliveries.
const corruptLogEvery = time.Minute

// corruptLogKeys bounds the keys whose last log time is remembered.
const corruptLogKeys = 4096

// corruptReporter makes corrupt entries loud: each read of one counts in
// keyrelay_corrupt_entries_total{bucket} and is logged at Error level, at
// most once per corruptLogEvery for each key. A nil reporter does nothing
// (a Ledger or Teams used outside a worker).
type corruptReporter struct {
	log   *zap.Logger
	count *prometheus.CounterVec

	mu   sync.Mutex
	last map[string]time.Time
}

func newCorruptReporter(log *zap.Logger, m *Metrics) *corruptReporter {
	return &corruptReporter{log: log, count: m.CorruptEntries, last: map[string]time.Time{}}
}

// corrupt reports e (when r is set) and returns it.
func (r *corruptReporter) corrupt(e *CorruptEntryError) error {
	if r == nil {
		return e
	}
	r.count.WithLabelValues(e.Bucket).Inc()
	now := time.Now()
	id := e.Bucket + "/" + e.Key
	r.mu.Lock()
	last, seen := r.last[id]
	logIt := !seen || now.Sub(last) >= corruptLogEvery
	if logIt {
		if len(r.last) >= corruptLogKeys {
			for k, t := range r.last {
				if now.Sub(t) >= corruptLogEvery {
					delete(r.last, k)
				}
			}
			if len(r.last) >= corruptLogKeys {
				clear(r.last)
			}
		}
		r.last[id] = now
	}
	r.mu.Unlock()
	if logIt {
		r.log.Error("corrupt entry: the events that need it wait (they are not dead-lettered) until it is repaired "+
			"(see docs/architecture.md, Known limits)",
			zap.String("bucket", e.Bucket), zap.String("key", e.Key), zap.String("fault", e.Fault))
	}
	return e
}
