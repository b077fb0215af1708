package conjur

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/providers"
)

// AnnotationEventHistory holds which event wrote which version: a JSON
// array of [version, event id] pairs, oldest first, at most HistoryLength
// of them. keyrelay-event and keyrelay-event-version keep naming the
// newest pair, as before the history existed.
const AnnotationEventHistory = "keyrelay-event-history"

// HistoryLength is how many (version, event) pairs the history keeps: two
// windows of the MaxVersions versions Conjur retains, so that a
// redelivery is still recognised (and refused, see ErrSuperseded) after
// its version has been pushed out of the retained versions.
const HistoryLength = 2 * MaxVersions

// ErrSuperseded marks a Put whose event wrote a version long ago that
// Conjur no longer retains (MaxVersions newer versions pushed it out): the
// event's value is not current and cannot be checked, and writing it again
// could overwrite a newer value, so nothing is written. Such errors also
// match providers.ErrConflict and are permanent.
var ErrSuperseded = errors.New("superseded: this event wrote a version that Conjur no longer retains; newer versions followed")

// entry is one version written by one event.
type entry struct {
	version int
	event   string
}

// history is the event history of a variable, oldest version first.
type history []entry

// historyOf reads the history from a variable's annotations, adding the
// pair of keyrelay-event and keyrelay-event-version (the only record of
// variables written before the history existed, and the newer one when
// both name the same event). A history that does not parse is ignored:
// the pair still applies.
func historyOf(ann map[string]string) history {
	var h history
	var raw [][2]json.RawMessage
	if s := ann[AnnotationEventHistory]; s != "" && json.Unmarshal([]byte(s), &raw) == nil {
		for _, p := range raw {
			var e entry
			if json.Unmarshal(p[0], &e.version) != nil || json.Unmarshal(p[1], &e.event) != nil || e.version < 1 || e.event == "" {
				continue
			}
			h = h.with(e.version, e.event)
		}
	}
	if ev, err := strconv.Atoi(ann[AnnotationEventVersion]); err == nil && ev >= 1 && ann[providers.EventTag] != "" {
		h = h.with(ev, ann[providers.EventTag])
	}
	return h
}

// with returns h recording that event wrote version: any other entry of
// the event or of the version is dropped (an event writes one version, a
// version has one writer), and only the newest HistoryLength entries are
// kept.
func (h history) with(version int, event string) history {
	out := make(history, 0, len(h)+1)
	for _, e := range h {
		if e.version != version && e.event != event {
			out = append(out, e)
		}
	}
	out = append(out, entry{version, event})
	slices.SortFunc(out, func(a, b entry) int { return a.version - b.version })
	if len(out) > HistoryLength {
		out = out[len(out)-HistoryLength:]
	}
	return out
}

// upTo drops the entries of versions after cur: declarations whose value
// was never added.
func (h history) upTo(cur int) history {
	return slices.DeleteFunc(slices.Clone(h), func(e entry) bool { return e.version > cur })
}

// versionOf returns the version event wrote, 0 if h has none.
func (h history) versionOf(event string) int {
	for _, e := range h {
		if e.event == event {
			return e.version
		}
	}
	return 0
}

// claimed reports whether h records an event other than event for version.
func (h history) claimed(version int, event string) bool {
	for _, e := range h {
		if e.version == version {
			return e.event != event
		}
	}
	return false
}

func (h history) eventOf(version int) string {
	for _, e := range h {
		if e.version == version {
			return e.event
		}
	}
	return ""
}

// String encodes h for the annotation.
func (h history) String() string {
	raw := make([][2]any, len(h))
	for i, e := range h {
		raw[i] = [2]any{e.version, e.event}
	}
	b, _ := json.Marshal(raw)
	return string(b)
}

// newest is the newest entry of h, the zero entry when h is empty.
func (h history) newest() entry {
	if len(h) == 0 {
		return entry{}
	}
	return h[len(h)-1]
}

// eventAnnotations are the annotations recording, on top of h, that event
// wrote version: the history, and keyrelay-event and
// keyrelay-event-version when that is the newest entry.
func eventAnnotations(h history, event string, version int) map[string]string {
	h = h.with(version, event)
	a := map[string]string{AnnotationEventHistory: h.String()}
	if n := h.newest(); n.version == version {
		a[providers.EventTag], a[AnnotationEventVersion] = event, strconv.Itoa(version)
	}
	return a
}

// recordEvent records, on top of h, that event wrote version of the
// variable name.
func (p *Provider) recordEvent(ctx context.Context, name string, h history, event string, version int) error {
	a := eventAnnotations(h, event, version)
	return p.loadPolicy(ctx, declarePolicy(name, a, sortedKeys(a)))
}

// earlierWrite looks for the version req's event (req.IdempotencyKey)
// already wrote, in the history the variable's annotations ann record and
// in the versions r retains, so that a redelivery writes nothing. The
// history names the version the event was declared against (before its
// value was added):
//
//   - no version, or one after the current version (a declaration whose
//     value was never added): the event did not write (0, nil);
//   - a retained version: it is the event's if it holds the event's value,
//     also when other writers (keyrelay or not) wrote after it: the
//     redelivery is a Duplicate of that version and overwrites nothing.
//     Otherwise the declaration lost a race to another writer's value (or
//     its value was never added and another writer's took its number), and
//     the event's value, if it was added, is in a later version no other
//     event claims, found by its value and recorded (best effort) so that
//     a further delivery finds it at once. Neither: the event did not
//     write (0, nil);
//   - a version older than any Conjur retains: the event wrote (or
//     declared) it and at least MaxVersions versions followed. That cannot
//     be checked, and writing the value again could overwrite a newer one:
//     a permanent error matching ErrSuperseded and providers.ErrConflict.
//
// The values read are compared in constant time, cleared and never logged.
func (p *Provider) earlierWrite(ctx context.Context, op string, req providers.PutRequest, id string, r *resource, ann map[string]string) (int, error) {
	cur := r.latest()
	h := historyOf(ann)
	ours := h.versionOf(req.IdempotencyKey)
	if cur == 0 || ours == 0 || ours > cur {
		return 0, nil
	}
	retained := make([]int, 0, len(r.Secrets))
	for _, s := range r.Secrets {
		retained = append(retained, s.Version)
	}
	slices.Sort(retained)
	if ours < retained[0] {
		return 0, providers.NewError(Name, op, req.Name, providers.Permanent, fmt.Errorf("%w: %w (version %d; Conjur keeps versions %d to %d, nothing was written)",
			providers.ErrConflict, ErrSuperseded, ours, retained[0], cur))
	}
	same := func(v int) (bool, error) {
		val, err := p.c.secret(ctx, id, v)
		if err != nil && isNotFound(err) && ctx.Err() == nil {
			// Newer versions pushed it out (or the variable was deleted)
			// since the resource was read: decide again on a retry.
			return false, providers.NewError(Name, op, req.Name, providers.Retryable,
				fmt.Errorf("%w: version %d went away while a redelivery was being checked", providers.ErrConflict, v))
		}
		if err != nil {
			return false, classify(ctx, op, req.Name, err)
		}
		eq := subtle.ConstantTimeCompare(val, req.Value) == 1
		clear(val)
		return eq, nil
	}
	for _, v := range retained {
		if v < ours || (v > ours && h.claimed(v, req.IdempotencyKey)) {
			continue
		}
		eq, err := same(v)
		if err != nil {
			return 0, err
		}
		if !eq {
			continue
		}
		if v != ours {
			if err := p.recordEvent(ctx, req.Name, h, req.IdempotencyKey, v); err != nil {
				// The write is done; a further delivery compares the values again.
				p.log.Warn("conjur: could not record the event id of a write", zap.String("name", req.Name), zap.Int("version", v),
					zap.Error(p.policyErr(ctx, op, req.Name, err, "record the event of a write")))
			}
		}
		return v, nil
	}
	return 0, nil
}
