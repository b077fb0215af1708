package events

import "time"

// Status is the outcome a confirmation reports.
type Status string

// Confirmation statuses.
const (
	// StatusStored: the value (or settings) was written.
	StatusStored Status = "stored"
	// StatusRotated: a new value was written, the previous one kept for the
	// grace period.
	StatusRotated Status = "rotated"
	// StatusDeleted: the secret was deleted (soft-deleted where supported).
	StatusDeleted Status = "deleted"
	// StatusSkipped: nothing to do by configuration (store_virtual_keys off).
	StatusSkipped Status = "skipped"
	// StatusSuperseded: a newer generation of the key was already applied,
	// so this older event was not written.
	StatusSuperseded Status = "superseded"
	// StatusRejected: the event is invalid or not allowed (read_only).
	StatusRejected Status = "rejected"
	// StatusFailed: retries exhausted or a permanent provider error; the
	// message is in the DLQ.
	StatusFailed Status = "failed"
)

// Confirmation answers exactly one event. It never carries a secret value.
type Confirmation struct {
	SpecVersion string `json:"spec_version"`
	EventID     string `json:"event_id"`
	// ClaimedEventID is set only on the rejection of a message that failed
	// validation: the id the message claimed, when it reads as an id. Such
	// a rejection is never filed under an event id (its event_id is ""), so
	// an invalid message cannot take a valid event's confirmation.
	ClaimedEventID string `json:"claimed_event_id,omitempty"`
	EventType      Type   `json:"event_type,omitempty"`
	TeamID         string `json:"team_id,omitempty"`
	KeyID          string `json:"key_id,omitempty"`
	Generation     uint64 `json:"generation,omitempty"`
	// JobID is the event's job_id: a bulk job counts its confirmations by it.
	JobID  string `json:"job_id,omitempty"`
	Status Status `json:"status"`
	// Duplicate is true when the event had already been applied: the
	// confirmation repeats the original outcome (a confirmation that had
	// already been published is never published twice).
	Duplicate bool `json:"duplicate,omitempty"`
	// Provider is the key_management_system name that was written.
	Provider string `json:"provider,omitempty"`
	// SecretRef is the provider-side name or path of the secret.
	SecretRef string `json:"secret_ref,omitempty"`
	// ProviderVersion is the version the provider assigned.
	ProviderVersion string `json:"provider_version,omitempty"`
	// Reason explains rejected, failed, skipped and superseded outcomes.
	Reason string `json:"reason,omitempty"`
	// Attempts is how many deliveries the event took.
	Attempts uint64 `json:"attempts,omitempty"`
	// StreamSeq is the event's sequence in its lane's stream
	// (KEYRELAY_EVENTS, or KEYRELAY_BULK when Lane is "bulk").
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Lane is "bulk" for an event consumed from the bulk lane (subject
	// keyrelay.bulk.>), absent for the interactive lane.
	Lane Lane      `json:"lane,omitempty"`
	Time time.Time `json:"time"`
}
