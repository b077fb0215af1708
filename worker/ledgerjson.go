package worker

import "github.com/keyrelay/keyrelay/internal/jsonw"

// appendJSON appends e as encoding/json.Marshal writes it, without
// reflection: an entry is written once or twice per event (see
// internal/jsonw), and TestLedgerEntryJSON holds it to encoding/json's
// bytes for every field.
func (e *LedgerEntry) appendJSON(b []byte) ([]byte, error) {
	o := jsonw.Begin(b)
	o.Uint("generation", e.Generation)
	o.String("event_id", e.EventID)
	o.String("event_type", string(e.EventType))
	o.String("status", string(e.Status))
	o.Uint("stream_seq", e.StreamSeq)
	o.StringOmit("provider", e.Provider)
	o.StringOmit("secret_ref", e.SecretRef)
	o.StringOmit("provider_version", e.ProviderVersion)
	if e.Placement != nil {
		o.Nested("placement", e.Placement.appendJSON)
	}
	o.UintOmit("meta_generation", e.MetaGeneration)
	o.StringOmit("meta_event_id", e.MetaEventID)
	o.StringOmit("alias", e.Alias)
	o.StringMapOmit("metadata", e.Metadata)
	if e.Sealed != nil {
		o.Nested("sealed", e.Sealed.AppendJSON)
	}
	o.UintOmit("sealed_generation", e.SealedGen)
	o.Time("updated_at", e.UpdatedAt)
	if c := e.Claim; c != nil {
		o.Nested("claim", func(b []byte) ([]byte, error) {
			o := jsonw.Begin(b)
			o.String("event_id", c.EventID)
			o.UintOmit("stream_seq", c.StreamSeq)
			o.StringOmit("lane", string(c.Lane))
			o.UintOmit("copy", c.Copy)
			o.Uint("generation", c.Generation)
			o.String("worker", c.Worker)
			o.Time("until", c.Until)
			if !c.Taken.IsZero() {
				// omitzero: claims of older versions have none.
				o.Time("taken", c.Taken)
			}
			return o.End()
		})
	}
	if r := e.Retry; r != nil {
		o.Nested("retry", func(b []byte) ([]byte, error) {
			o := jsonw.Begin(b)
			o.String("event_id", r.EventID)
			o.Uint("stream_seq", r.StreamSeq)
			o.StringOmit("lane", string(r.Lane))
			o.Time("first_failure", r.FirstFailure)
			o.Int("failures", int64(r.Failures))
			return o.End()
		})
	}
	if len(e.Sources) > 0 {
		o.Nested("sources", func(b []byte) ([]byte, error) {
			b = append(b, '[')
			for i := range e.Sources {
				if i > 0 {
					b = append(b, ',')
				}
				s := &e.Sources[i]
				o := jsonw.Begin(b)
				o.String("backend", s.Backend)
				o.String("secret_ref", s.SecretRef)
				if s.Placement != nil {
					o.Nested("placement", s.Placement.appendJSON)
				}
				o.Time("since", s.Since)
				var err error
				if b, err = o.End(); err != nil {
					return nil, err
				}
			}
			return append(b, ']'), nil
		})
	}
	if p := e.Previous; p != nil {
		o.Nested("previous", func(b []byte) ([]byte, error) {
			o := jsonw.Begin(b)
			o.String("version", p.Version)
			o.String("secret_ref", p.SecretRef)
			o.Time("until", p.Until)
			return o.End()
		})
	}
	return o.End()
}

// appendJSON appends p as encoding/json writes it: {} for a team without
// options, a few bytes on an entry.
func (p *Placement) appendJSON(b []byte) ([]byte, error) {
	o := jsonw.Begin(b)
	o.StringMapOmit("team_options", p.TeamOptions)
	return o.End()
}
