package smfake

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Names of Secret Manager's per-project request quotas, as "Secret
// Manager quotas and limits" defines them.
const (
	// QuotaAccess counts calls of the access method
	// (AccessSecretVersion): 90,000 a minute per project.
	QuotaAccess = "access"
	// QuotaRead counts every other non-mutating call (GetSecret,
	// ListSecrets, GetSecretVersion, ListSecretVersions, GetIamPolicy,
	// TestIamPermissions): 600 a minute per project.
	QuotaRead = "read"
	// QuotaWrite counts every mutating call (CreateSecret, UpdateSecret,
	// DeleteSecret, AddSecretVersion, EnableSecretVersion,
	// DisableSecretVersion, DestroySecretVersion, SetIamPolicy): 600 a
	// minute per project.
	QuotaWrite = "write"
)

// quotaOf returns the quota a method counts against.
func quotaOf(method string) string {
	switch method {
	case "AccessSecretVersion":
		return QuotaAccess
	case "CreateSecret", "UpdateSecret", "DeleteSecret", "AddSecretVersion",
		"EnableSecretVersion", "DisableSecretVersion", "DestroySecretVersion", "SetIamPolicy":
		return QuotaWrite
	}
	return QuotaRead
}

// Quota is one per-project rate quota, enforced over a sliding window: a
// call is admitted while fewer than Limit calls were admitted in the
// Window before it; otherwise it fails and is not counted.
//
// Google publishes these quotas per minute and says rate quotas reset
// after their interval, but not where a minute starts. A client cannot
// know the server's minute boundaries, so the only rate it can rely on is
// at most Limit calls in any Window: the sliding window throttles every
// burst that some alignment of fixed minutes would. A token bucket of a
// second's worth, the shape of keyrelay's own limiters, can exceed it:
// its burst comes on top of a full Window of refill.
type Quota struct {
	// Limit is how many calls a Window admits. Zero or negative: the
	// quota is not enforced.
	Limit int
	// Window is the window's length. Default (0): a minute.
	Window time.Duration
}

// DefaultQuotas returns Secret Manager's published per-project quotas
// (see the Quota* names).
func DefaultQuotas() map[string]Quota {
	return map[string]Quota{
		QuotaAccess: {Limit: 90000, Window: time.Minute},
		QuotaRead:   {Limit: 600, Window: time.Minute},
		QuotaWrite:  {Limit: 600, Window: time.Minute},
	}
}

// Identifiers the fake's quota errors carry, modelled on the service's.
const (
	QuotaService = "secretmanager.googleapis.com"
	// QuotaReason is the google.rpc.ErrorInfo reason of a rate quota
	// error.
	QuotaReason = "RATE_LIMIT_EXCEEDED"
)

var quotaLabels = map[string]struct{ metric, limit string }{
	QuotaAccess: {"Access requests", "AccessRequestsPerMinutePerProject"},
	QuotaRead:   {"Read requests", "ReadRequestsPerMinutePerProject"},
	QuotaWrite:  {"Write requests", "WriteRequestsPerMinutePerProject"},
}

// quotaState is the fake's quota enforcement; off until EnforceQuotas.
type quotaState struct {
	mu        sync.Mutex
	limits    map[string]Quota
	admitted  map[string][]time.Time // by project + "/" + quota, oldest first
	throttled map[string]int         // by quota
	// log holds every admitted call's time since EnforceQuotas, by quota.
	log map[string][]time.Time
}

// EnforceQuotas makes the fake throttle calls above the quotas in q (by
// quota name, e.g. DefaultQuotas() or {QuotaWrite: {Limit: 10, Window:
// time.Second}}), per project (the one the request's resource name or
// parent names), as Secret Manager does: a call over its quota fails with
// RESOURCE_EXHAUSTED ("Quota exceeded for quota metric 'Write requests'
// and limit 'Write requests per minute' of service
// 'secretmanager.googleapis.com' for consumer 'project_number:P'.") with
// a google.rpc.ErrorInfo (reason RATE_LIMIT_EXCEEDED, the quota's metric,
// limit and value in its metadata) and a google.rpc.QuotaFailure
// detail, and no google.rpc.RetryInfo; it changes nothing. Quotas absent
// from q are not enforced. Each call starts over with empty windows; nil
// turns enforcement off, the default. Windows run on the real clock, not
// SetClock's. Throttled calls are not counted by Calls (they reach no
// method); Errors counts them as RESOURCE_EXHAUSTED.
func (s *Server) EnforceQuotas(q map[string]Quota) {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	s.quota.limits = nil
	if len(q) > 0 {
		s.quota.limits = make(map[string]Quota, len(q))
		for k, v := range q {
			if v.Window <= 0 {
				v.Window = time.Minute
			}
			s.quota.limits[k] = v
		}
	}
	s.quota.admitted = map[string][]time.Time{}
	s.quota.log = map[string][]time.Time{}
}

// Admitted returns the times of the calls of quota (one of the Quota*
// names) the fake admitted while enforcing it, oldest first.
func (s *Server) Admitted(quota string) []time.Time {
	s.quota.mu.Lock()
	defer s.quota.mu.Unlock()
	return append([]time.Time(nil), s.quota.log[quota]...)
}

// Throttled returns how many calls the fake throttled for quota (one of
// the Quota* names), or for every quota when quota is "".
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

// throttle returns the RESOURCE_EXHAUSTED error of a call to fullMethod
// over its quota, nil when the call may go on (and then counts it).
func (s *Server) throttle(fullMethod string, req any) error {
	method := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	q := quotaOf(method)
	project := projectOf(req)
	qs := &s.quota
	qs.mu.Lock()
	defer qs.mu.Unlock()
	lim, ok := qs.limits[q]
	if !ok || lim.Limit <= 0 {
		return nil
	}
	now := time.Now()
	k := project + "/" + q
	w := qs.admitted[k]
	i := 0
	for i < len(w) && now.Sub(w[i]) >= lim.Window {
		i++
	}
	w = w[i:]
	if len(w) < lim.Limit {
		qs.admitted[k] = append(w, now)
		qs.log[q] = append(qs.log[q], now)
		return nil
	}
	qs.admitted[k] = w
	if qs.throttled == nil {
		qs.throttled = map[string]int{}
	}
	qs.throttled[q]++
	return quotaError(q, project, lim)
}

func quotaError(q, project string, lim Quota) error {
	l := quotaLabels[q]
	consumer := "project_number:" + project
	msg := fmt.Sprintf("Quota exceeded for quota metric '%s' and limit '%s per minute' of service '%s' for consumer '%s'.",
		l.metric, l.metric, QuotaService, consumer)
	st := status.New(codes.ResourceExhausted, msg)
	d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: QuotaReason, Domain: "googleapis.com", Metadata: map[string]string{
			"service":           QuotaService,
			"consumer":          "projects/" + project,
			"quota_metric":      QuotaService + "/" + strings.ToLower(strings.ReplaceAll(l.metric, " ", "_")),
			"quota_limit":       l.limit,
			"quota_limit_value": strconv.Itoa(lim.Limit),
			"quota_location":    "global",
		}},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: consumer, Description: msg}}},
	)
	if err != nil {
		return st.Err()
	}
	return d.Err()
}

// projectOf returns the project a request names (in its name, parent,
// secret's name or IAM resource), "" when none.
func projectOf(req any) string {
	var name string
	switch r := req.(type) {
	case *secretmanagerpb.UpdateSecretRequest:
		name = r.GetSecret().GetName()
	case interface{ GetParent() string }:
		name = r.GetParent()
	case interface{ GetName() string }:
		name = r.GetName()
	case interface{ GetResource() string }:
		name = r.GetResource()
	}
	p := strings.Split(name, "/")
	if len(p) >= 2 && p[0] == "projects" {
		return p[1]
	}
	return ""
}
