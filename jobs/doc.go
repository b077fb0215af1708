// Package jobs runs bulk rotation jobs: `keyrelay rotate` selects keys
// from the ledger, and a job publishes one key.rotated event per key, with
// a fresh value in the gateway's format, sealed, carrying the job's id.
//
// A job is durable: its plan (the selected keys, each with the event id
// and generation it is rotated with, fixed when the job is created) is
// kept in the KEYRELAY_JOB_PLANS object store and its record (cursor,
// state) in the KEYRELAY_JOBS bucket. A job resumed after a crash
// publishes again from its last saved cursor; an event published twice
// carries the same id and generation, so workers apply it once (the
// stream's duplicate window drops the copy, after it the ledger's event
// id does), and no key is rotated twice.
//
// Status is counted from the confirmations of the plan's event ids, so it
// is exact for any publisher that sets a job id and records its plan.
package jobs
