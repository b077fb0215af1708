package kumofront

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Staging labels.
const (
	StageCurrent  = "AWSCURRENT"
	StagePrevious = "AWSPREVIOUS"
)

// Limits the front enforces, from the Secrets Manager API reference.
const (
	MaxNameLength        = 512
	MaxDescriptionLength = 2048
	MaxValueSize         = 65536
	MaxTags              = 50
	MaxTagKeyLength      = 128
	MaxTagValueLength    = 256
)

// The versions quota, from the AWS Secrets Manager User Guide ("AWS
// Secrets Manager quotas"): Secrets Manager removes a secret's unlabelled
// (deprecated) versions when it has more than MaxVersions, but never a
// version created less than DeprecatedVersionMinAge ago, so a secret
// written more often than that allows reaches its quota of versions. The
// front removes them when a write needs the room, oldest first, and
// answers a write that would still take the secret over MaxVersions with
// HTTP 400 LimitExceededException, "The request failed because it would
// exceed one of the Secrets Manager quotas." (the API reference's words
// for the error), creating nothing. The quota clears with time (see
// AgeVersions) or when labels are taken off old versions.
const (
	MaxVersions             = 100
	DeprecatedVersionMinAge = 24 * time.Hour
)

// LimitExceededMessage is the message of the front's LimitExceededException.
const LimitExceededMessage = "The request failed because it would exceed one of the Secrets Manager quotas."

// entry is the front's state of one secret.
type entry struct {
	name     string
	arn      string
	labels   map[string]string // staging label → version id
	versions []version         // creation order
	// deletedAt is the scheduled deletion date; nil when live.
	deletedAt *time.Time
	window    int64
	tags      []tag
	// replicas are the Regions the secret is replicated to (a primary
	// secret's AddReplicaRegions), in request order.
	replicas []string
}

type version struct {
	id      string
	created time.Time
}

type tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

func (e *entry) has(id string) bool {
	for _, v := range e.versions {
		if v.id == id {
			return true
		}
	}
	return false
}

func (e *entry) created(id string) time.Time {
	for _, v := range e.versions {
		if v.id == id {
			return v.created
		}
	}
	return time.Time{}
}

func (e *entry) stagesOf(id string) []string {
	out := []string{}
	for l, v := range e.labels {
		if v == id {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// attach moves label to version id; a new AWSCURRENT sends the old one to
// AWSPREVIOUS.
func (e *entry) attach(label, id string) {
	if label == StageCurrent {
		if old := e.labels[StageCurrent]; old != "" && old != id {
			e.labels[StagePrevious] = old
		}
	}
	e.labels[label] = id
}

// makeRoom removes deprecated versions older than DeprecatedVersionMinAge,
// oldest first, until a new version fits under MaxVersions, and reports
// whether it does.
func (e *entry) makeRoom(now time.Time) bool {
	for i := 0; len(e.versions) >= MaxVersions && i < len(e.versions); {
		v := e.versions[i]
		if len(e.stagesOf(v.id)) > 0 || now.Sub(v.created) < DeprecatedVersionMinAge {
			i++
			continue
		}
		e.versions = slices.Delete(e.versions, i, i+1)
	}
	return len(e.versions) < MaxVersions
}

func (e *entry) addVersion(id string, stages []string) {
	now := time.Now().UTC()
	if n := len(e.versions); n > 0 && !now.After(e.versions[n-1].created) {
		now = e.versions[n-1].created.Add(time.Millisecond) // keep creation order visible
	}
	e.versions = append(e.versions, version{id: id, created: now})
	for _, l := range stages {
		e.attach(l, id)
	}
}

func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]+$`)

func checkName(name string) *apiError {
	if name == "" || len(name) > MaxNameLength || !nameRE.MatchString(name) {
		return errf(400, "ValidationException", "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!")
	}
	return nil
}

func checkToken(tok string) *apiError {
	if tok != "" && (len(tok) < 32 || len(tok) > 64) {
		return errf(400, "ValidationException", "1 validation error detected: Value at 'clientRequestToken' failed to satisfy constraint: Member must have length between 32 and 64")
	}
	return nil
}

func tagRuneOK(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || r == ' ' || strings.ContainsRune("_.:/=+-@", r)
}

func checkTags(tags []tag) *apiError {
	if len(tags) > MaxTags {
		return errf(400, "ValidationException", "a secret can have at most %d tags", MaxTags)
	}
	for _, t := range tags {
		if n := utf8.RuneCountInString(t.Key); n == 0 || n > MaxTagKeyLength {
			return errf(400, "ValidationException", "tag keys must be 1 to %d characters", MaxTagKeyLength)
		}
		if utf8.RuneCountInString(t.Value) > MaxTagValueLength {
			return errf(400, "ValidationException", "tag values must be at most %d characters", MaxTagValueLength)
		}
		if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return errf(400, "InvalidParameterException", "tag keys starting with aws: are reserved")
		}
		for _, r := range t.Key + t.Value {
			if !tagRuneOK(r) {
				return errf(400, "ValidationException", "tags may contain only letters, digits, spaces and _.:/=+-@")
			}
		}
	}
	return nil
}

// value is a request's secret data.
type value struct {
	String *string `json:"SecretString,omitempty"`
	Binary []byte  `json:"SecretBinary,omitempty"`
}

func (v value) present() bool { return v.String != nil || v.Binary != nil }

func (v value) check() *apiError {
	if v.String != nil && v.Binary != nil {
		return errf(400, "InvalidParameterException", "You can't specify both a binary secret value and a string secret value in the same secret.")
	}
	if (v.String != nil && len(*v.String) > MaxValueSize) || len(v.Binary) > MaxValueSize {
		return errf(400, "ValidationException", "secret values are at most %d bytes", MaxValueSize)
	}
	return nil
}

func (v value) equal(o value) bool {
	if (v.String == nil) != (o.String == nil) {
		return false
	}
	if v.String != nil {
		return *v.String == *o.String
	}
	return bytes.Equal(v.Binary, o.Binary)
}

func newID() string { return uuid.NewString() }

// lookup finds a live-or-deleted secret by name or ARN.
func (s *Server) lookup(id string) (*entry, *apiError) {
	if e := s.secrets[id]; e != nil {
		return e, nil
	}
	if strings.HasPrefix(id, "arn:") {
		for _, e := range s.secrets {
			if e.arn == id {
				return e, nil
			}
		}
	}
	return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
}

// live is lookup refusing secrets scheduled for deletion.
func (s *Server) live(id string) (*entry, *apiError) {
	e, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	if e.deletedAt != nil {
		return nil, errf(400, "InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.")
	}
	return e, nil
}

func (s *Server) handle(w http.ResponseWriter, ctx context.Context, action string, body []byte, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out any
	var err *apiError
	switch action {
	case "CreateSecret":
		out, err = s.createSecret(ctx, body)
	case "GetSecretValue":
		out, err = s.getSecretValue(ctx, body)
	case "PutSecretValue":
		out, err = s.putSecretValue(ctx, body)
	case "UpdateSecret":
		out, err = s.updateSecret(ctx, body)
	case "DescribeSecret":
		out, err = s.describeSecret(ctx, body)
	case "DeleteSecret":
		out, err = s.deleteSecret(ctx, body)
	case "RestoreSecret":
		out, err = s.restoreSecret(body)
	case "TagResource":
		out, err = s.tagResource(body)
	case "UntagResource":
		out, err = s.untagResource(body)
	case "ListSecretVersionIds":
		out, err = s.listSecretVersionIds(body)
	case "ListSecrets":
		out, err = s.listSecrets(body)
	case "UpdateSecretVersionStage":
		out, err = s.updateSecretVersionStage(body)
	case "RemoveRegionsFromReplication":
		out, err = s.removeRegionsFromReplication(body)
	case "ReplicateSecretToRegions":
		out, err = s.replicateSecretToRegions(body)
	default:
		r.Body = http.NoBody
		if len(body) > 0 {
			r.Body = ioNopCloser(body)
		}
		r.ContentLength = int64(len(body))
		s.proxy.ServeHTTP(w, r)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, out)
}

func decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return errf(400, "SerializationException", "could not parse the request body")
	}
	return nil
}

func (s *Server) createSecret(ctx context.Context, body []byte) (any, *apiError) {
	var in struct {
		Name               string
		ClientRequestToken string
		Description        *string
		KmsKeyId           *string
		Tags               []tag
		AddReplicaRegions  []map[string]any
		value
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if err := checkName(in.Name); err != nil {
		return nil, err
	}
	if err := checkToken(in.ClientRequestToken); err != nil {
		return nil, err
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	if in.Description != nil && utf8.RuneCountInString(*in.Description) > MaxDescriptionLength {
		return nil, errf(400, "ValidationException", "descriptions are at most %d characters", MaxDescriptionLength)
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, err
	}
	if e := s.secrets[in.Name]; e != nil {
		if e.deletedAt != nil {
			return nil, errf(400, "InvalidRequestException", "You can't create this secret because a secret with this name is already scheduled for deletion.")
		}
		return nil, errf(400, "ResourceExistsException", "The operation failed because the secret %s already exists.", in.Name)
	}
	kin := map[string]any{"Name": in.Name, "Tags": in.Tags}
	if in.Description != nil {
		kin["Description"] = *in.Description
	}
	if in.KmsKeyId != nil {
		kin["KmsKeyId"] = *in.KmsKeyId
	}
	if len(in.AddReplicaRegions) > 0 {
		kin["AddReplicaRegions"] = in.AddReplicaRegions
	}
	var kout struct{ ARN, Name string }
	if err := s.kumoCall(ctx, "CreateSecret", kin, &kout); err != nil {
		return nil, err
	}
	e := &entry{name: in.Name, arn: kout.ARN, labels: map[string]string{}, tags: in.Tags}
	for _, r := range in.AddReplicaRegions {
		if region, _ := r["Region"].(string); region != "" && !slices.Contains(e.replicas, region) {
			e.replicas = append(e.replicas, region)
		}
	}
	resp := map[string]any{"ARN": e.arn, "Name": e.name}
	if in.present() {
		tok := in.ClientRequestToken
		if tok == "" {
			tok = newID()
		}
		if err := s.kumoPut(ctx, e.name, tok, in.value); err != nil {
			_ = s.kumoCall(ctx, "DeleteSecret", map[string]any{"SecretId": e.name, "ForceDeleteWithoutRecovery": true}, nil)
			return nil, err
		}
		e.addVersion(tok, []string{StageCurrent})
		resp["VersionId"] = tok
	}
	s.secrets[e.name] = e
	return resp, nil
}

func (s *Server) kumoPut(ctx context.Context, name, tok string, v value) *apiError {
	in := map[string]any{"SecretId": name, "ClientRequestToken": tok}
	if v.String != nil {
		in["SecretString"] = *v.String
	} else {
		in["SecretBinary"] = v.Binary
	}
	return s.kumoCall(ctx, "PutSecretValue", in, nil)
}

func (s *Server) kumoGet(ctx context.Context, name, id string) (value, map[string]any, *apiError) {
	var raw map[string]any
	if err := s.kumoCall(ctx, "GetSecretValue", map[string]any{"SecretId": name, "VersionId": id}, &raw); err != nil {
		return value{}, nil, err
	}
	var v value
	if str, ok := raw["SecretString"].(string); ok {
		v.String = &str
	}
	if b, ok := raw["SecretBinary"].(string); ok {
		_ = json.Unmarshal([]byte(strconv.Quote(b)), &v.Binary)
		v.String = nil
	}
	return v, raw, nil
}

// newVersion writes v as a new version of e with stages, honouring
// ClientRequestToken idempotency. It returns the version id.
func (s *Server) newVersion(ctx context.Context, e *entry, tok string, v value, stages []string) (string, *apiError) {
	if err := checkToken(tok); err != nil {
		return "", err
	}
	if err := v.check(); err != nil {
		return "", err
	}
	if tok != "" && e.has(tok) {
		old, _, err := s.kumoGet(ctx, e.name, tok)
		if err != nil {
			return "", err
		}
		if !old.equal(v) {
			return "", errf(400, "ResourceExistsException", "You can't modify an existing version, you can only create new versions.")
		}
		return tok, nil // same token, same data: nothing happens
	}
	if !e.makeRoom(time.Now()) {
		return "", errf(400, "LimitExceededException", LimitExceededMessage)
	}
	if tok == "" {
		tok = newID()
	}
	if err := s.kumoPut(ctx, e.name, tok, v); err != nil {
		return "", err
	}
	if len(stages) == 0 {
		stages = []string{StageCurrent}
	}
	e.addVersion(tok, stages)
	return tok, nil
}

func (s *Server) getSecretValue(ctx context.Context, body []byte) (any, *apiError) {
	var in struct{ SecretId, VersionId, VersionStage string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	id := in.VersionId
	if id == "" {
		stage := in.VersionStage
		if stage == "" {
			stage = StageCurrent
		}
		if id = e.labels[stage]; id == "" {
			return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: %s", stage)
		}
	} else if !e.has(id) {
		return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for VersionId: %s", id)
	} else if in.VersionStage != "" && e.labels[in.VersionStage] != id {
		return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: %s", in.VersionStage)
	}
	_, raw, err := s.kumoGet(ctx, e.name, id)
	if err != nil {
		return nil, err
	}
	raw["ARN"], raw["Name"], raw["VersionId"] = e.arn, e.name, id
	raw["VersionStages"] = e.stagesOf(id)
	raw["CreatedDate"] = epoch(e.created(id))
	return raw, nil
}

func (s *Server) putSecretValue(ctx context.Context, body []byte) (any, *apiError) {
	var in struct {
		SecretId           string
		ClientRequestToken string
		VersionStages      []string
		value
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	if !in.present() {
		return nil, errf(400, "InvalidParameterException", "You must provide either SecretString or SecretBinary.")
	}
	id, err := s.newVersion(ctx, e, in.ClientRequestToken, in.value, in.VersionStages)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ARN": e.arn, "Name": e.name, "VersionId": id, "VersionStages": e.stagesOf(id)}, nil
}

func (s *Server) updateSecret(ctx context.Context, body []byte) (any, *apiError) {
	var in struct {
		SecretId           string
		ClientRequestToken string
		Description        *string
		KmsKeyId           *string
		value
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	if in.Description != nil && utf8.RuneCountInString(*in.Description) > MaxDescriptionLength {
		return nil, errf(400, "ValidationException", "descriptions are at most %d characters", MaxDescriptionLength)
	}
	resp := map[string]any{"ARN": e.arn, "Name": e.name}
	if in.present() {
		id, err := s.newVersion(ctx, e, in.ClientRequestToken, in.value, nil)
		if err != nil {
			return nil, err
		}
		resp["VersionId"] = id
	}
	if in.Description != nil || in.KmsKeyId != nil {
		kin := map[string]any{"SecretId": e.name}
		if in.Description != nil {
			kin["Description"] = *in.Description
		}
		if in.KmsKeyId != nil {
			kin["KmsKeyId"] = *in.KmsKeyId
		}
		if err := s.kumoCall(ctx, "UpdateSecret", kin, nil); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (s *Server) describeSecret(ctx context.Context, body []byte) (any, *apiError) {
	var in struct{ SecretId string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.lookup(in.SecretId)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := s.kumoCall(ctx, "DescribeSecret", map[string]any{"SecretId": e.name}, &raw); err != nil {
		return nil, err
	}
	stages := map[string][]string{}
	for _, v := range e.versions {
		if st := e.stagesOf(v.id); len(st) > 0 {
			stages[v.id] = st
		}
	}
	raw["VersionIdsToStages"] = stages
	delete(raw, "Tags")
	if len(e.tags) > 0 {
		raw["Tags"] = e.tags
	}
	delete(raw, "DeletedDate")
	if e.deletedAt != nil {
		raw["DeletedDate"] = epoch(*e.deletedAt)
	}
	delete(raw, "ReplicationStatus")
	if len(e.replicas) > 0 {
		rs := make([]map[string]any, 0, len(e.replicas))
		for _, r := range e.replicas {
			rs = append(rs, map[string]any{"Region": r, "Status": "InSync"})
		}
		raw["ReplicationStatus"] = rs
	}
	return raw, nil
}

func (s *Server) deleteSecret(ctx context.Context, body []byte) (any, *apiError) {
	var in struct {
		SecretId                   string
		RecoveryWindowInDays       *int64
		ForceDeleteWithoutRecovery *bool
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	force := in.ForceDeleteWithoutRecovery != nil && *in.ForceDeleteWithoutRecovery
	if force && in.RecoveryWindowInDays != nil {
		return nil, errf(400, "InvalidParameterException", "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.")
	}
	window := int64(30)
	if in.RecoveryWindowInDays != nil {
		window = *in.RecoveryWindowInDays
		if window < 7 || window > 30 {
			return nil, errf(400, "InvalidParameterException", "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).")
		}
	}
	e, err := s.lookup(in.SecretId)
	if err != nil {
		return nil, err
	}
	if len(e.replicas) > 0 {
		// AWS deletes no primary secret with replicas, forced or not:
		// RemoveRegionsFromReplication first.
		return nil, errf(400, "InvalidParameterException", "You can't delete secret %s that still has replica regions [%s].", e.arn, strings.Join(e.replicas, ", "))
	}
	now := time.Now().UTC()
	if force {
		if err := s.kumoCall(ctx, "DeleteSecret", map[string]any{"SecretId": e.name, "ForceDeleteWithoutRecovery": true}, nil); err != nil {
			return nil, err
		}
		delete(s.secrets, e.name)
		return map[string]any{"ARN": e.arn, "Name": e.name, "DeletionDate": epoch(now)}, nil
	}
	if e.deletedAt != nil {
		return nil, errf(400, "InvalidRequestException", "You tried to perform the operation on a secret that's currently marked deleted.")
	}
	at := now.Add(time.Duration(window) * 24 * time.Hour)
	e.deletedAt, e.window = &at, window
	return map[string]any{"ARN": e.arn, "Name": e.name, "DeletionDate": epoch(at)}, nil
}

// removeRegionsFromReplication deletes the named replicas of a primary
// secret; a Region that holds no replica is an InvalidParameterException,
// as on AWS.
func (s *Server) removeRegionsFromReplication(body []byte) (any, *apiError) {
	var in struct {
		SecretId             string
		RemoveReplicaRegions []string
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if len(in.RemoveReplicaRegions) == 0 {
		return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'removeReplicaRegions' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	for _, r := range in.RemoveReplicaRegions {
		if !slices.Contains(e.replicas, r) {
			return nil, errf(400, "InvalidParameterException", "The secret has no replica in Region %s.", r)
		}
	}
	e.replicas = slices.DeleteFunc(e.replicas, func(r string) bool { return slices.Contains(in.RemoveReplicaRegions, r) })
	rs := []map[string]any{}
	for _, r := range e.replicas {
		rs = append(rs, map[string]any{"Region": r, "Status": "InSync"})
	}
	return map[string]any{"ARN": e.arn, "ReplicationStatus": rs}, nil
}

// replicateSecretToRegions adds replicas to a primary secret.
func (s *Server) replicateSecretToRegions(body []byte) (any, *apiError) {
	var in struct {
		SecretId          string
		AddReplicaRegions []struct{ Region string }
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if len(in.AddReplicaRegions) == 0 {
		return nil, errf(400, "ValidationException", "1 validation error detected: Value at 'addReplicaRegions' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	for _, r := range in.AddReplicaRegions {
		if r.Region == "" {
			return nil, errf(400, "InvalidParameterException", "A replica Region is required.")
		}
		if !slices.Contains(e.replicas, r.Region) {
			e.replicas = append(e.replicas, r.Region)
		}
	}
	rs := []map[string]any{}
	for _, r := range e.replicas {
		rs = append(rs, map[string]any{"Region": r, "Status": "InSync"})
	}
	return map[string]any{"ARN": e.arn, "ReplicationStatus": rs}, nil
}

func (s *Server) restoreSecret(body []byte) (any, *apiError) {
	var in struct{ SecretId string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.lookup(in.SecretId)
	if err != nil {
		return nil, err
	}
	e.deletedAt, e.window = nil, 0
	return map[string]any{"ARN": e.arn, "Name": e.name}, nil
}

func (s *Server) tagResource(body []byte) (any, *apiError) {
	var in struct {
		SecretId string
		Tags     []tag
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	merged := map[string]string{}
	for _, t := range e.tags {
		merged[t.Key] = t.Value
	}
	for _, t := range in.Tags {
		merged[t.Key] = t.Value
	}
	tags := make([]tag, 0, len(merged))
	for k, v := range merged {
		tags = append(tags, tag{k, v})
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	if err := checkTags(tags); err != nil {
		return nil, err
	}
	e.tags = tags
	return map[string]any{}, nil
}

func (s *Server) untagResource(body []byte) (any, *apiError) {
	var in struct {
		SecretId string
		TagKeys  []string
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	drop := map[string]bool{}
	for _, k := range in.TagKeys {
		drop[k] = true
	}
	kept := e.tags[:0:0]
	for _, t := range e.tags {
		if !drop[t.Key] {
			kept = append(kept, t)
		}
	}
	e.tags = kept
	return map[string]any{}, nil
}

func (s *Server) listSecretVersionIds(body []byte) (any, *apiError) {
	var in struct {
		SecretId          string
		MaxResults        *int
		NextToken         *string
		IncludeDeprecated *bool
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.lookup(in.SecretId)
	if err != nil {
		return nil, err
	}
	max := 100
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 100 {
			return nil, errf(400, "ValidationException", "MaxResults must be between 1 and 100")
		}
		max = *in.MaxResults
	}
	start := 0
	if in.NextToken != nil {
		n, err := strconv.Atoi(*in.NextToken)
		if err != nil || n < 0 {
			return nil, errf(400, "InvalidNextTokenException", "The NextToken value is invalid.")
		}
		start = n
	}
	all := in.IncludeDeprecated != nil && *in.IncludeDeprecated
	var list []map[string]any
	for _, v := range e.versions {
		st := e.stagesOf(v.id)
		if len(st) == 0 && !all {
			continue
		}
		list = append(list, map[string]any{"VersionId": v.id, "VersionStages": st, "CreatedDate": epoch(v.created)})
	}
	resp := map[string]any{"ARN": e.arn, "Name": e.name}
	if start > len(list) {
		start = len(list)
	}
	end := min(start+max, len(list))
	resp["Versions"] = append([]map[string]any{}, list[start:end]...)
	if end < len(list) {
		resp["NextToken"] = strconv.Itoa(end)
	}
	return resp, nil
}

func (s *Server) updateSecretVersionStage(body []byte) (any, *apiError) {
	var in struct{ SecretId, VersionStage, RemoveFromVersionId, MoveToVersionId string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e, err := s.live(in.SecretId)
	if err != nil {
		return nil, err
	}
	if in.VersionStage == "" {
		return nil, errf(400, "InvalidParameterException", "You must provide a value for the VersionStage parameter.")
	}
	if err := checkStageParams(in.VersionStage, in.RemoveFromVersionId, in.MoveToVersionId); err != nil {
		return nil, err
	}
	cur := e.labels[in.VersionStage]
	switch {
	case in.MoveToVersionId != "":
		if !e.has(in.MoveToVersionId) {
			return nil, errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret version.")
		}
		if cur != "" && cur != in.MoveToVersionId && in.RemoveFromVersionId != cur {
			return nil, errf(400, "InvalidParameterException",
				"The parameter RemoveFromVersionId can't be empty. Staging label %s is currently attached to version %s, so you must explicitly reference that version in RemoveFromVersionId.", in.VersionStage, cur)
		}
		e.attach(in.VersionStage, in.MoveToVersionId)
	case in.RemoveFromVersionId != "":
		if cur != in.RemoveFromVersionId {
			return nil, errf(400, "InvalidParameterException", "The staging label %s is not attached to version %s.", in.VersionStage, in.RemoveFromVersionId)
		}
		if in.VersionStage == StageCurrent {
			return nil, errf(400, "InvalidParameterException", "You can only move staging label AWSCURRENT to a different secret version. It can't be completely removed.")
		}
		delete(e.labels, in.VersionStage)
	default:
		return nil, errf(400, "InvalidParameterException", "You must specify MoveToVersionId or RemoveFromVersionId.")
	}
	return map[string]any{"ARN": e.arn, "Name": e.name}, nil
}

// checkStageParams applies UpdateSecretVersionStage's length constraints:
// VersionStage 1..256 characters, RemoveFromVersionId and MoveToVersionId
// (when given) 32..64.
func checkStageParams(stage, removeFrom, moveTo string) *apiError {
	if utf8.RuneCountInString(stage) > 256 {
		return errf(400, "ValidationException", "1 validation error detected: Value at 'versionStage' failed to satisfy constraint: Member must have length less than or equal to 256")
	}
	for _, f := range []struct{ field, v string }{{"removeFromVersionId", removeFrom}, {"moveToVersionId", moveTo}} {
		if f.v != "" && (len(f.v) < 32 || len(f.v) > 64) {
			return errf(400, "ValidationException", "1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length between 32 and 64", f.field)
		}
	}
	return nil
}

// AgeVersions makes every version of the secret id (its name or ARN) d
// older, as if d had passed since each was written (CreatedDate shows it):
// how a test lets DeprecatedVersionMinAge pass for the versions quota. It
// reports whether the front has the secret.
func (s *Server) AgeVersions(id string, d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.lookup(id)
	if err != nil {
		return false
	}
	for i := range e.versions {
		e.versions[i].created = e.versions[i].created.Add(-d)
	}
	return true
}
