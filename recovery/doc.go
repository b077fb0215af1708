// Package recovery compares and restores the backends against the ledger,
// keyrelay's record of every key's newest state (generation, backend,
// secret name, sealed value).
//
// # Drift
//
// Drift reads, for every ledger entry in scope, the secret from the
// backend the ledger says holds it, and classifies it:
//
//   - ok: the secret holds the ledger's newest value (or is absent for a
//     deleted key);
//   - missing: the ledger has a value, the backend has no secret;
//   - stale: the secret's value differs from the ledger's (compared by
//     SHA-256 digest; a value is never printed, logged or returned);
//   - resurrected: the key is deleted in the ledger but its secret exists;
//   - unowned: the name holds a secret keyrelay does not own, or another
//     key's;
//   - orphan: for backends that can list (providers.Lister), a secret owned
//     by keyrelay for the team with no ledger entry, or under a name the
//     ledger no longer uses.
//
// Drift only reads. Reads go through the providers' own client-side limits,
// at most Config.Concurrency at a time, and an optional per-backend rate.
package recovery
