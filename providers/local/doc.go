// Package local is keyrelay's embedded secret store: encrypted, versioned,
// file-backed, and the default backend for `make run`. It registers as the
// key_management_system "local" (Register) and is configured by the options
// "path", "key_file" and "fsync" (see Config).
//
// # Storage
//
// Each secret is one JSON file, <path>/secrets/<sha256(name)>.json, so any
// name is safe; the file holds the real name, the tags, the description,
// timestamps and every version with its idempotency key. Metadata is
// plaintext. Every version's value is encrypted with AES-256-GCM under the
// key in key_file, with a random nonce and associated data binding the
// secret name and the version number: a ciphertext copied to another secret
// or version fails to decrypt. Each file records the id of the key it was
// written with (a truncated hash), so a wrong key_file is reported as such.
//
// With an empty path or ":memory:" nothing touches the disk: the in-memory
// mode, for tests and benchmarks.
//
// # Guarantees
//
//   - Writes are atomic: a file is written aside, fsynced, renamed over the
//     old one, and the directory fsynced (without fsync=false). Readers,
//     and crashes, see the old record or the new one, never a mix.
//   - Read-modify-writes of one secret are serialized between goroutines
//     and, through flock on <path>/locks/<sha256(name)>.lock, between
//     processes sharing the directory (on Linux, macOS and the BSDs), so
//     concurrent writers never lose a version and versions are exactly
//     "1", "2", ... with no gaps. A waiting writer gives up when its
//     context ends. Reads take no lock.
//   - A Put carrying the current version's IdempotencyKey is a Duplicate and
//     writes nothing. Ownership tags are checked before every overwrite,
//     delete, restore and tag update unless the request sets Adopt.
//   - Delete is soft (versions kept, secret hidden) unless Force; a Put on a
//     soft-deleted secret restores it with a new version. Versions are
//     never pruned: the file grows with each write.
//   - Retire (providers.Retirer) drops an earlier version's ciphertext and
//     keeps its metadata (listed Destroyed); Get of it is then ErrNotFound.
//   - Errors are *providers.Error values and never contain a value. Invalid
//     requests, ownership, not-found, corrupt files (ErrCorrupt) and a wrong
//     key (ErrWrongKey) are permanent; permission errors and read-only file
//     systems are permanent ErrAccessDenied; other I/O errors (disk full,
//     EIO, too many open files) are retryable ErrUnavailable.
//
// Losing key_file loses every secret; back it up separately from the
// directory.
package local
