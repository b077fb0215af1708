// Package lookup is keyrelay's read-through cache and lookup API: the
// gateway asks for a secret by name, over HTTP (GET /v1/secrets/{name}) or
// NATS request-reply (service "keyrelay-lookup"), and gets it from memory,
// going to the team's secret manager only on a miss.
//
// Scopes. A credential reads one scope: one team, whose names are the key
// ids keyrelay stored for it (the ledger says whether a key exists, where
// it lives and at which generation), or the gateway's global scope, whose
// names follow LiteLLM's get_secret: hosted_keys decides which names go to
// the secret manager and which come from the environment (only names
// listed in keyrelay.lookup.environment), primary_secret_name reads many
// names from one JSON secret, and aws_kms/ and Google KMS ciphertexts are
// decrypted before they are cached.
//
// Access. Every HTTP lookup, and by default every NATS lookup, needs the
// bearer token of a configured client (keyrelay.lookup.clients) whose scope
// is the one asked for; with no client configured every lookup is refused
// with 401. Only when the operator sets keyrelay.lookup.nats_auth:
// permissions (NATSOptions.PermissionsOnly) does a NATS request without a
// token get an answer, in the scope of its subject: NATS subject
// permissions are then the only access control, which only an external
// NATS has (settings refuses that mode on the embedded server). NATS
// carries requests and replies to every subscriber the server allows, so
// lookup tokens keep teams apart over NATS only where subject permissions
// stop clients from subscribing to others' subjects and inboxes: serve
// runs the NATS service on the embedded server (one token for every
// client) only when keyrelay.lookup.nats says so, and warns then.
//
// Cache. Entries live in an otter cache bounded in entries and bytes at
// once (each entry weighs max(its bytes, max_bytes/max_entries), and the
// total weight is capped at max_bytes). Each value is fresh for its TTL
// with jitter and then servable, marked stale, for stale_if_error while
// the backend fails. Concurrent misses and refreshes of one name share one
// backend call (otter's loader), and a load that an invalidation overtakes
// is discarded. Not-found and forbidden answers are cached for
// negative_ttl.
//
// Loads. Backend reads are bounded per backend (max_loads_per_backend: a
// provider with one set of options, the ledger, a KMS) and in all
// (max_concurrent_loads). A load waits for its backend's share before it
// takes a slot of the pool, and holds the slots of one backend at a time,
// so a backend that hangs holds at most its share and lookups of every
// other backend go on; a miss that gets no slot within backend_timeout (or
// its deadline) answers 503 naming the bound.
//
// Invalidation. Every instance follows the confirmations stream: stored and
// rotated confirmations replace a cached key (it is dropped and reloaded),
// deleted ones drop it, and team settings changes drop the team's entries
// (which are not loaded again under older settings than the confirmed
// ones). A global entry read from a key's secret is dropped by that key's
// confirmations whatever name they give (a rename's gives only the new
// one). Until the follower's consumer exists, and while the stream cannot
// be followed (NATS disconnected), cached values are revalidated against
// the backend before they are served, and the cache is emptied when
// following starts again.
//
// Values are held only in the cache entry, as the JSON fragment they are
// served in; they never go to logs, metrics or errors.
package lookup
