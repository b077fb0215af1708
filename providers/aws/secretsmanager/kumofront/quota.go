package kumofront

import (
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Names of Secrets Manager's request quotas, one per row of the quotas
// table in the AWS Secrets Manager User Guide ("AWS Secrets Manager
// quotas"). Each is per account and Region; the comment lists the actions
// that count against it and the published rate.
const (
	// QuotaRead: DescribeSecret and GetSecretValue combined, 10,000 per
	// second.
	QuotaRead = "read"
	// QuotaWrite: PutSecretValue, UpdateSecret, UpdateSecretVersionStage,
	// RemoveRegionsFromReplication, ReplicateSecretToRegions and
	// StopReplicationToReplica combined, 50 per second.
	QuotaWrite = "write"
	// QuotaCreate: CreateSecret, 50 per second.
	QuotaCreate = "create"
	// QuotaDelete: DeleteSecret, 50 per second.
	QuotaDelete = "delete"
	// QuotaRestore: RestoreSecret, 50 per second.
	QuotaRestore = "restore"
	// QuotaRotate: RotateSecret and CancelRotateSecret combined, 50 per
	// second.
	QuotaRotate = "rotate"
	// QuotaTag: TagResource and UntagResource combined, 50 per second.
	QuotaTag = "tag"
	// QuotaPolicy: DeleteResourcePolicy, GetResourcePolicy,
	// PutResourcePolicy and ValidateResourcePolicy combined, 50 per second.
	QuotaPolicy = "policy"
	// QuotaListSecrets: ListSecrets, 100 per second.
	QuotaListSecrets = "list-secrets"
	// QuotaListVersions: ListSecretVersionIds, 50 per second.
	QuotaListVersions = "list-versions"
	// QuotaBatchGet: BatchGetSecretValue, 100 per second.
	QuotaBatchGet = "batch-get"
	// QuotaRandomPassword: GetRandomPassword, 50 per second.
	QuotaRandomPassword = "random-password"
)

// quotaOf maps each Secrets Manager action to the quota it counts against.
var quotaOf = map[string]string{
	"DescribeSecret":               QuotaRead,
	"GetSecretValue":               QuotaRead,
	"PutSecretValue":               QuotaWrite,
	"UpdateSecret":                 QuotaWrite,
	"UpdateSecretVersionStage":     QuotaWrite,
	"RemoveRegionsFromReplication": QuotaWrite,
	"ReplicateSecretToRegions":     QuotaWrite,
	"StopReplicationToReplica":     QuotaWrite,
	"CreateSecret":                 QuotaCreate,
	"DeleteSecret":                 QuotaDelete,
	"RestoreSecret":                QuotaRestore,
	"RotateSecret":                 QuotaRotate,
	"CancelRotateSecret":           QuotaRotate,
	"TagResource":                  QuotaTag,
	"UntagResource":                QuotaTag,
	"DeleteResourcePolicy":         QuotaPolicy,
	"GetResourcePolicy":            QuotaPolicy,
	"PutResourcePolicy":            QuotaPolicy,
	"ValidateResourcePolicy":       QuotaPolicy,
	"ListSecrets":                  QuotaListSecrets,
	"ListSecretVersionIds":         QuotaListVersions,
	"BatchGetSecretValue":          QuotaBatchGet,
	"GetRandomPassword":            QuotaRandomPassword,
}

// QuotaOf returns the name of the quota action counts against, "" for an
// action no quota lists.
func QuotaOf(action string) string { return quotaOf[action] }

// Quota is one request quota, enforced as a token bucket: Burst tokens at
// most, refilled continuously at PerSecond; each request takes one token
// and a request that finds none is throttled and takes none.
//
// A token bucket is how AWS describes its API request throttling (a
// bucket's capacity and its refill rate); Secrets Manager publishes only
// the rate, per second, so the bucket holds one second's worth by default.
// A client must therefore never send more than PerSecond requests in any
// second, however its requests are spread: a burst of PerSecond+1 is
// throttled.
type Quota struct {
	// PerSecond is the refill rate, in requests per second. Zero or
	// negative: the quota is not enforced.
	PerSecond float64
	// Burst is the bucket's capacity. Default (0): one second's worth,
	// at least 1.
	Burst int
}

// DefaultQuotas returns Secrets Manager's published quotas (see the Quota*
// names), per account and Region.
func DefaultQuotas() map[string]Quota {
	return map[string]Quota{
		QuotaRead: {PerSecond: 10000}, QuotaWrite: {PerSecond: 50}, QuotaCreate: {PerSecond: 50},
		QuotaDelete: {PerSecond: 50}, QuotaRestore: {PerSecond: 50}, QuotaRotate: {PerSecond: 50},
		QuotaTag: {PerSecond: 50}, QuotaPolicy: {PerSecond: 50}, QuotaListSecrets: {PerSecond: 100},
		QuotaListVersions: {PerSecond: 50}, QuotaBatchGet: {PerSecond: 100}, QuotaRandomPassword: {PerSecond: 50},
	}
}

// ThrottleMessage is the message of the front's ThrottlingException, as
// AWS words it.
const ThrottleMessage = "Rate exceeded"

// quotaState is the front's quota enforcement; off until EnforceQuotas.
type quotaState struct {
	mu        sync.Mutex
	limits    map[string]Quota
	buckets   map[string]*rate.Limiter // by region + "/" + quota
	throttled map[string]int           // by quota
}

// EnforceQuotas makes the front throttle Secrets Manager requests above
// the quotas in q (by quota name, e.g. DefaultQuotas() or
// {QuotaWrite: {PerSecond: 5}}), as AWS does: a request over its quota
// gets HTTP 400 with the JSON protocol's error {"__type":
// "ThrottlingException", "message": "Rate exceeded"}, changes nothing and
// takes no token. Buckets are kept per Region (the one the request's
// SigV4 credential scope names; the front models a single account) and
// start full. Quotas absent from q, and actions without a quota, are not
// limited. Each call starts over with full buckets; nil turns enforcement
// off, which is the default. Throttled requests are recorded (Requests,
// Calls) but fire no injected fault.
func (s *Server) EnforceQuotas(q map[string]Quota) {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	s.quota.limits = nil
	if len(q) > 0 {
		s.quota.limits = make(map[string]Quota, len(q))
		for k, v := range q {
			s.quota.limits[k] = v
		}
	}
	s.quota.buckets = map[string]*rate.Limiter{}
}

// Throttled returns how many requests the front throttled for quota (one
// of the Quota* names), or for every quota when quota is "".
func (s *Server) Throttled(quota string) int {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	if quota != "" {
		return s.quota.throttled[quota]
	}
	n := 0
	for _, c := range s.quota.throttled {
		n += c
	}
	return n
}

// throttle answers a request over its quota with a ThrottlingException
// and reports whether it did.
func (s *Server) throttle(w http.ResponseWriter, action, secretID, auth string) bool {
	q := quotaOf[action]
	if q == "" || !s.quota.over(q, credentialRegion(auth)) {
		return false
	}
	s.fmu.Lock()
	s.requests = append(s.requests, Request{Action: action, SecretID: secretID, AccessKeyID: accessKeyID(auth), At: time.Now()})
	s.fmu.Unlock()
	writeError(w, &apiError{status: http.StatusBadRequest, code: "ThrottlingException", msg: ThrottleMessage})
	return true
}

// over takes a token of quota q in region and reports whether there was
// none: the request is over its quota. Unlimited quotas are never over.
func (qs *quotaState) over(q, region string) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	lim, ok := qs.limits[q]
	if !ok || lim.PerSecond <= 0 {
		return false
	}
	k := region + "/" + q
	b := qs.buckets[k]
	if b == nil {
		burst := lim.Burst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(lim.PerSecond)))
		}
		b = rate.NewLimiter(rate.Limit(lim.PerSecond), burst)
		qs.buckets[k] = b
	}
	if b.Allow() {
		return false
	}
	if qs.throttled == nil {
		qs.throttled = map[string]int{}
	}
	qs.throttled[q]++
	return true
}

// credentialRegion returns the Region of a SigV4 Authorization header's
// credential scope (key/date/region/service/aws4_request), Region when
// there is none.
func credentialRegion(auth string) string {
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return Region
	}
	scope := auth[i+len("Credential="):]
	if j := strings.IndexAny(scope, ", "); j >= 0 {
		scope = scope[:j]
	}
	if p := strings.Split(scope, "/"); len(p) >= 5 && p[2] != "" {
		return p[2]
	}
	return Region
}
