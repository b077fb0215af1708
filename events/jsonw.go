package events

import "github.com/keyrelay/keyrelay/internal/jsonw"

// AppendJSON appends s as encoding/json.Marshal writes it, without
// reflection (it is part of the ledger entry written on every event).
func (s *SealedValue) AppendJSON(b []byte) ([]byte, error) {
	o := jsonw.Begin(b)
	o.String("alg", s.Alg)
	o.StringOmit("kid", s.KID)
	o.BytesOmit("edk", s.EDK)
	o.BytesOmit("nonce", s.Nonce)
	o.Bytes("ct", s.Ciphertext)
	return o.End()
}

// AppendJSON appends c as encoding/json.Marshal writes it, without
// reflection (one confirmation is written per event).
func (c *Confirmation) AppendJSON(b []byte) ([]byte, error) {
	o := jsonw.Begin(b)
	o.String("spec_version", c.SpecVersion)
	o.String("event_id", c.EventID)
	o.StringOmit("claimed_event_id", c.ClaimedEventID)
	o.StringOmit("event_type", string(c.EventType))
	o.StringOmit("team_id", c.TeamID)
	o.StringOmit("key_id", c.KeyID)
	o.UintOmit("generation", c.Generation)
	o.StringOmit("job_id", c.JobID)
	o.String("status", string(c.Status))
	o.BoolOmit("duplicate", c.Duplicate)
	o.StringOmit("provider", c.Provider)
	o.StringOmit("secret_ref", c.SecretRef)
	o.StringOmit("provider_version", c.ProviderVersion)
	o.StringOmit("reason", c.Reason)
	o.UintOmit("attempts", c.Attempts)
	o.UintOmit("stream_seq", c.StreamSeq)
	o.StringOmit("lane", string(c.Lane))
	o.Time("time", c.Time)
	return o.End()
}
