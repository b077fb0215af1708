package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// NewKeyEvent builds a key event with a fresh id. For key.created and
// key.rotated, value is sealed with s and bound to the event; pass data to
// set metadata. It validates the result.
func NewKeyEvent(ctx context.Context, s Sealer, typ Type, team, key string, gen uint64, value []byte, data KeyData) (*Event, error) {
	ev := &Event{SpecVersion: SpecVersion, ID: uuid.NewString(), Type: typ, Time: time.Now().UTC(),
		TeamID: team, KeyID: key, Generation: gen}
	switch typ {
	case KeyCreated, KeyRotated:
		sv, err := s.Seal(ctx, value, BindingOf(ev))
		if err != nil {
			return nil, err
		}
		data.Value = sv
		raw, err := json.Marshal(data)
		if err != nil {
			return nil, err
		}
		ev.Data = raw
	case KeyDeleted:
	default:
		return nil, fmt.Errorf("NewKeyEvent: use a payload-specific builder for %s", typ)
	}
	return ev, ev.Validate()
}

// Encode validates and marshals ev.
func (ev *Event) Encode() ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	out := *ev
	if isEmptyData(out.Data) {
		// Decode refuses "data": null; absent data means the same.
		out.Data = nil
	}
	// Without HTML escaping the encoding is never longer than the event as
	// Decode accepted it, so every decoded event re-encodes within
	// MaxEventBytes.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&out); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxEventBytes {
		return nil, invalid("", "event is %d bytes, larger than %d", len(b), MaxEventBytes)
	}
	return b, nil
}

// KeyData decodes the payload of key.created and key.rotated.
func (ev *Event) KeyData() (*KeyData, error) {
	if d, ok := recall[*KeyData](ev); ok {
		c := *d
		return &c, nil
	}
	var d KeyData
	if err := strictUnmarshal("data", ev.Data, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// UpdateData decodes the payload of key.updated (empty data is allowed).
func (ev *Event) UpdateData() (*UpdateData, error) {
	if d, ok := recall[*UpdateData](ev); ok {
		c := *d
		return &c, nil
	}
	var d UpdateData
	if len(ev.Data) == 0 || string(ev.Data) == "null" {
		return &d, nil
	}
	if err := strictUnmarshal("data", ev.Data, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// SettingsData decodes the payload of team.settings.updated.
func (ev *Event) SettingsData() (*SettingsData, error) {
	if d, ok := recall[*SettingsData](ev); ok {
		c := *d
		return &c, nil
	}
	var d SettingsData
	if err := strictUnmarshal("data", ev.Data, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// remember caches a payload decoded from the current Data.
func (ev *Event) remember(d any) {
	ev.decoded, ev.decodedFrom = d, ev.Data
}

// recall returns the cached payload if Data has not been replaced since.
func recall[T any](ev *Event) (T, bool) {
	var zero T
	if ev.decoded == nil || len(ev.Data) == 0 || len(ev.decodedFrom) != len(ev.Data) || &ev.decodedFrom[0] != &ev.Data[0] {
		return zero, false
	}
	d, ok := ev.decoded.(T)
	return d, ok
}
