// Package conjurfake is a wire-faithful HTTPS fake of the parts of the
// CyberArk Conjur v5 REST API that keyrelay's cyberark provider uses through
// github.com/cyberark/conjur-api-go: API-key authentication returning a
// signed access token, policy loads (POST append, PATCH update, PUT replace)
// of a YAML subset (!variable with annotations, !delete of a variable) into
// existing branches, secret writes and versioned reads, resource reads,
// resource listings (kind, search, limit, offset, count, acting_as; see
// list.go), and Conjur's 401/403/404/409/422 responses with its JSON error
// bodies.
//
// # What the fake enforces
//
//   - Tokens: only tokens it issued, until they expire (TokenTTL) or
//     ExpireTokens; anything else gets a bare 401.
//   - Authorization: a role reads and writes only the branches AddUser
//     gave it; other variables are 404, policy loads into other branches
//     403, loads into missing branches 404.
//   - Concurrent policy loads, on by default: a load takes
//     DefaultPolicyLoadTime (SetPolicyLoadTime) and its changes appear
//     when it ends, as Conjur's load transaction commits. A load that
//     overlaps another load of the same branch gets Conjur's
//     409 {"error":{"code":"policy_conflict",...}} with a Retry-After
//     header (DefaultPolicyConflictRetryAfter, SetPolicyConflictRetryAfter),
//     as Conjur's PoliciesController answers the unique-key violation of
//     two policy versions of one branch. Loads of different branches never
//     conflict. HoldPolicyLoad stands for another client's load in
//     progress; PolicyConflicts counts the 409s; SetPolicyLoadTime(0)
//     turns the window off.
//   - Listing limits: api_resource_list_limit_max (SetListLimitMax).
//   - Values: empty values are 422; Conjur keeps MaxVersions versions.
//
// Conjur itself (Rails and Postgres) cannot run offline, so the provider's
// tests run against this fake. It is test support, not a Conjur server.
package conjurfake
