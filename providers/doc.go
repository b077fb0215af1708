// Package providers defines the small interface every secret-manager backend
// implements, the error classification the worker branches on, and the
// registry that maps LiteLLM's key_management_system names to factories.
//
// One package per backend lives below this one (providers/local, ...); each
// passes the shared conformance suite in providers/providertest against its
// real server or the closest offline emulator.
//
// # Guarantees every provider gives
//
//   - Put with an IdempotencyKey already used for the secret's current
//     version returns that version and writes nothing (a redelivered event
//     never creates a second version).
//   - A secret not tagged as keyrelay's is neither overwritten nor deleted
//     unless the request sets Adopt.
//   - Errors are *Error values classified retryable or permanent, and never
//     contain a secret value or a credential.
//
// # Listing
//
// Providers that can enumerate their secrets implement Lister (local,
// vault, aws_secret_manager, google secret manager, azure key vault; not
// conjur). List returns only live secrets whose tags mark them keyrelay's,
// under the name Put took, paging through the backend's list API. Find it
// with AsLister, which looks through wrappers that have an
// Unwrap() Provider method.
package providers
