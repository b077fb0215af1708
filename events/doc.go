// Package events defines keyrelay's wire contract: the versioned event
// envelope a gateway publishes, the confirmation keyrelay answers with,
// the subjects both travel on, and the sealed-value envelope that keeps
// secret values out of the retained stream.
//
// # Guarantees
//
//   - Decode never panics and rejects, with a precise *ValidationError,
//     unknown types or spec versions, missing fields, oversized payloads and
//     identifiers that could escape a subject token or a provider path
//     (dots, wildcards, "..", control characters).
//   - A sealed value is bound to the event's team, key id and generation:
//     moving it to another event makes Open fail.
//   - Values are sealed under a key of the local keyring (A256GCM) or under
//     a data key wrapped by AWS KMS (A256GCM-KMS, opened by
//     providers/aws/kms); each opener refuses the other's values with
//     ErrUnsupportedAlg, and Multi combines them.
//   - Plaintext values are refused unless the caller opts in explicitly.
//
// The JSON Schemas in schema/ and the vectors in testdata/ describe the same
// contract for publishers written in other languages.
package events
