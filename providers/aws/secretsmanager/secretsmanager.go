package secretsmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/providers"
)

// Name is the key_management_system name the provider registers under
// (LiteLLM's).
const Name = "aws_secret_manager"

// Staging labels.
const (
	StageCurrent  = "AWSCURRENT"
	StagePrevious = "AWSPREVIOUS"
)

// maxPutAttempts bounds the describe-and-write rounds of one Put that
// races with other writers creating or deleting the same name.
const maxPutAttempts = 3

// Register adds the provider to r under Name.
func Register(r *providers.Registry) {
	r.Register(Name, Factory)
	r.AllowTeamOptions(Name, TeamOptions...)
}

// TeamOptions are the options a team's settings may set: where and how its
// secrets are kept (region, the role to assume, encryption key, recovery
// window, replicas), never endpoints or credentials.
var TeamOptions = []string{
	awsconfig.OptionRegion, awsconfig.OptionAWSRegionName, awsconfig.OptionAWSRoleName,
	awsconfig.OptionAWSSessionName, awsconfig.OptionAWSExternalID,
	OptionKMSKeyID, OptionRecoveryWindowDays, OptionReplicaRegions,
}

// Factory builds a provider from cfg.Options and cfg.Getenv (see
// ConfigFromOptions). It makes no network call; a bad configuration is a
// permanent error wrapping providers.ErrInvalid.
func Factory(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	c, err := ConfigFromOptions(cfg.Options, cfg.Getenv)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	p, err := New(ctx, c, cfg.Logger)
	if err != nil {
		return nil, err
	}
	p.quotas = cfg.Quotas
	return p, nil
}

// Provider stores keyrelay secrets in AWS Secrets Manager. It is safe for
// concurrent use.
type Provider struct {
	api    API
	cfg    Config
	lim    *limiters
	key    limiterKey       // whose quotas the calls count against
	quotas providers.Quotas // cluster-wide quotas, nil for none
	log    *zap.Logger
	closed atomic.Bool
}

var (
	_ providers.Provider   = (*Provider)(nil)
	_ providers.Versioner  = (*Provider)(nil)
	_ providers.TagUpdater = (*Provider)(nil)
	_ providers.Closer     = (*Provider)(nil)
)

// New builds a provider talking to AWS through the official SDK, with the
// connection cfg.AWS describes (awsconfig.Settings.Load). It makes no
// network call. log may be nil.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	cfg = cfg.withDefaults()
	awsCfg, err := cfg.AWS.Load(ctx)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	awsCfg.AppID = "keyrelay"
	client := sm.NewFromConfig(awsCfg, func(o *sm.Options) { o.Retryer = awsconfig.WithoutQuotaRetry(o.Retryer) })
	return newProvider(client, cfg, awsCfg.Region, log), nil
}

// NewWithAPI builds a provider on api, another transport for the calls API
// lists (tests). cfg.AWS is used for the rate limiters' key only.
func NewWithAPI(api API, cfg Config, log *zap.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	cfg = cfg.withDefaults()
	return newProvider(api, cfg, cfg.AWS.Region, log), nil
}

func newProvider(api API, cfg Config, region string, log *zap.Logger) *Provider {
	if log == nil {
		log = zap.NewNop()
	}
	key := limiterKey{region: region, endpoint: cfg.AWS.Endpoint, account: cfg.AWS.Account(),
		write: cfg.WriteTPS, read: cfg.ReadTPS, control: cfg.ControlTPS}
	return &Provider{api: api, cfg: cfg, lim: limitersFor(key), key: key, log: log.With(zap.String("provider", Name))}
}

// Config returns the configuration in use, defaults applied.
func (p *Provider) Config() Config { return p.cfg }

// Capabilities implements providers.Provider: versions (by VersionId),
// soft delete (recovery windows) and tags.
func (p *Provider) Capabilities() providers.Capabilities {
	return providers.Capabilities{Versions: true, SoftDelete: true, Tags: true}
}

// Close implements providers.Closer: later calls fail with ErrClosed.
func (p *Provider) Close() error {
	p.closed.Store(true)
	return nil
}

// begin checks what every call checks first.
func (p *Provider) begin(ctx context.Context, op, name string) error {
	if p.closed.Load() {
		return newErr(op, name, providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return ctxErr(op, name, err)
	}
	switch {
	case name == "":
		return errInvalid(op, name, "empty name")
	case len(name) > MaxNameLength:
		return errInvalid(op, clip(name, 64), "name is %d bytes, at most %d allowed", len(name), MaxNameLength)
	case !utf8.ValidString(name):
		return errInvalid(op, "", "name is not valid UTF-8")
	}
	return nil
}

// withTimeout applies Config.Timeout to a context without a deadline.
func (p *Provider) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, p.cfg.Timeout)
}

// call takes a token from bucket b, makes one AWS call and classifies its
// error. value is the request's secret value, withheld from messages.
func call[O any](p *Provider, ctx context.Context, op, name string, b bucket, awsOp string, value []byte, fn func(context.Context) (O, error)) (O, error) {
	var zero O
	if err := p.wait(ctx, op, name, b); err != nil {
		return zero, err
	}
	out, err := fn(ctx)
	if err != nil {
		return zero, classify(op, name, awsOp, err, value)
	}
	return out, nil
}

func awsCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// describe returns the secret's metadata, or nil when it does not exist.
func (p *Provider) describe(ctx context.Context, op, name, id string) (*sm.DescribeSecretOutput, error) {
	out, err := call(p, ctx, op, name, bucketRead, "DescribeSecret", nil, func(ctx context.Context) (*sm.DescribeSecretOutput, error) {
		return p.api.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(id)})
	})
	if errors.Is(err, providers.ErrNotFound) {
		return nil, nil
	}
	return out, err
}

func currentVersion(d *sm.DescribeSecretOutput) string {
	for id, stages := range d.VersionIdsToStages {
		if slices.Contains(stages, StageCurrent) {
			return id
		}
	}
	return ""
}

func checkDescription(op, name, desc string) error {
	if !utf8.ValidString(desc) {
		return errInvalid(op, name, "description is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(desc); n > MaxDescriptionLength {
		return errInvalid(op, name, "description is %d characters, at most %d allowed", n, MaxDescriptionLength)
	}
	return nil
}

// Put implements providers.Provider.
//
// A new name is created with CreateSecret; an existing one gets a new
// version with PutSecretValue, which moves the old value to AWSPREVIOUS.
// The ClientRequestToken is ClientRequestToken(req.IdempotencyKey), and AWS
// uses it as the VersionId, so a Put whose token is already the current
// version is a Duplicate and writes nothing, and a retry after a lost
// response never makes a second version. A token naming an older version
// with the same value makes that version current again (AWS would
// otherwise ignore the write). A name scheduled for deletion is restored
// first (Created is then true). A secret missing a replica
// Config.ReplicaRegions names (a restored one: Delete removes them) is
// replicated there before the write. A secret created, deleted or
// scheduled for deletion by someone else between the check and the write
// is checked again, up to three rounds, then the Put fails with a
// retryable ErrConflict. Ownership tags are checked before any
// change unless req.Adopt. Tags and the description are brought in line
// after the value: nil req.Tags keeps the secret's extra tags, non-nil ones
// replace them; an empty Description keeps the stored one. Valid UTF-8
// values are stored as SecretString, as LiteLLM writes them; other bytes as
// SecretBinary. Empty values are refused (ErrInvalid).
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return providers.PutResult{}, err
	}
	switch {
	case len(req.Value) == 0:
		return providers.PutResult{}, errInvalid(op, name, "empty value (Secrets Manager stores no empty secret)")
	case len(req.Value) > MaxValueSize:
		return providers.PutResult{}, errInvalid(op, name, "value is %d bytes, at most %d allowed", len(req.Value), MaxValueSize)
	}
	if err := checkDescription(op, name, req.Description); err != nil {
		return providers.PutResult{}, err
	}
	extra := extraTags(req.Tags)
	if len(extra)+3 > MaxTags {
		return providers.PutResult{}, errInvalid(op, name, "%d tags, at most %d allowed besides keyrelay's 3", len(extra), MaxTags-3)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := SecretID(name)
	token := ClientRequestToken(req.IdempotencyKey)
	for attempt := 1; ; attempt++ {
		d, err := p.describe(ctx, op, name, id)
		if err != nil {
			return providers.PutResult{}, err
		}
		var res providers.PutResult
		var again bool
		if d != nil {
			res, again, err = p.update(ctx, op, req, id, token, extra, d)
		} else {
			res, again, err = p.create(ctx, op, req, id, token, extra)
		}
		if again && attempt < maxPutAttempts {
			continue
		}
		return res, err
	}
}

// create makes a new secret. again is true when the name turned out to
// exist (another writer, or a deletion still in progress).
func (p *Provider) create(ctx context.Context, op string, req providers.PutRequest, id, token string, extra map[string]string) (providers.PutResult, bool, error) {
	name := req.Name
	in := &sm.CreateSecretInput{Name: aws.String(id), Tags: tagList(providers.OwnerTags(req.Owner, extra))}
	if token != "" {
		in.ClientRequestToken = aws.String(token)
	}
	if utf8.Valid(req.Value) {
		in.SecretString = aws.String(string(req.Value))
	} else {
		in.SecretBinary = bytes.Clone(req.Value)
	}
	if req.Description != "" {
		in.Description = aws.String(req.Description)
	}
	if p.cfg.KMSKeyID != "" {
		in.KmsKeyId = aws.String(p.cfg.KMSKeyID)
	}
	for _, r := range p.cfg.ReplicaRegions {
		in.AddReplicaRegions = append(in.AddReplicaRegions, smReplica(r))
	}
	out, err := call(p, ctx, op, name, bucketCreate, "CreateSecret", req.Value, func(ctx context.Context) (*sm.CreateSecretOutput, error) {
		return p.api.CreateSecret(ctx, in)
	})
	if err != nil {
		if errors.Is(err, providers.ErrConflict) {
			return providers.PutResult{}, true, err // created meanwhile: write a version instead
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == "InvalidRequestException" && mentionsDeletion(ae.Message) {
			// Scheduled for deletion meanwhile, or a forced deletion AWS
			// has not finished: describe again, or retry later.
			return providers.PutResult{}, true, newErr(op, name, providers.Retryable,
				fmt.Errorf("%w: the name is being deleted: %w", providers.ErrConflict, ae))
		}
		return providers.PutResult{}, false, err
	}
	return providers.PutResult{Version: aws.ToString(out.VersionId), Created: true}, false, nil
}

func mentionsDeletion(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "deletion") || strings.Contains(m, "deleted")
}

// update writes a new version of an existing secret, restoring it first
// when it is scheduled for deletion. again is true when the secret was
// deleted, or scheduled for deletion, between the describe and the write.
func (p *Provider) update(ctx context.Context, op string, req providers.PutRequest, id, token string, extra map[string]string, d *sm.DescribeSecretOutput) (res providers.PutResult, again bool, err error) {
	name := req.Name
	old := tagMap(d.Tags)
	if !req.Adopt && !providers.IsOwnedBy(old, req.Owner) {
		return providers.PutResult{}, false, errNotOwned(op, name)
	}
	restored := false
	if d.DeletedDate != nil {
		if _, err := call(p, ctx, op, name, bucketRestore, "RestoreSecret", nil, func(ctx context.Context) (*sm.RestoreSecretOutput, error) {
			return p.api.RestoreSecret(ctx, &sm.RestoreSecretInput{SecretId: aws.String(id)})
		}); err != nil {
			return providers.PutResult{}, changedUnderUs(err), raced(op, name, err)
		}
		restored = true
		p.log.Info("restored a secret scheduled for deletion to write it", zap.String("secret", name))
	}
	// Delete removes the replicas (AWS deletes no primary secret that has
	// any), so a restored secret has none: replicate it again, as a new
	// secret is. A failure writes nothing, and the retry replicates.
	if err := p.replicate(ctx, op, name, id, d); err != nil {
		return providers.PutResult{}, changedUnderUs(err), raced(op, name, err)
	}
	cur := currentVersion(d)
	version := cur
	if token == "" || cur != token {
		out, err := p.putValue(ctx, op, name, id, token, req.Value)
		if err != nil {
			return providers.PutResult{}, changedUnderUs(err), raced(op, name, err)
		}
		version = aws.ToString(out.VersionId)
		if !slices.Contains(out.VersionStages, StageCurrent) {
			// The token is an older version holding this value, which AWS
			// leaves as it is: make it current again.
			if err := p.moveCurrent(ctx, op, name, id, version, cur); err != nil {
				return providers.PutResult{}, false, err
			}
		}
	}
	want := desiredTags(old, req.Owner, extra, req.Tags == nil && !restored, req.Adopt)
	if err := p.syncTags(ctx, op, name, id, old, want); err != nil {
		return providers.PutResult{}, false, err
	}
	if err := p.syncDescription(ctx, op, name, id, req.Description, aws.ToString(d.Description)); err != nil {
		return providers.PutResult{}, false, err
	}
	return providers.PutResult{Version: version, Created: restored, Duplicate: !restored && token != "" && cur == token}, false, nil
}

// changedUnderUs reports whether a write failed because the secret was
// deleted, or scheduled for deletion, after it was described.
func changedUnderUs(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Code == "ResourceNotFoundException" || (ae.Code == "InvalidRequestException" && mentionsDeletion(ae.Message))
}

// raced turns such a failure into a retryable conflict: Put creates or
// restores the secret on its next round. Other errors pass unchanged.
func raced(op, name string, err error) error {
	if !changedUnderUs(err) {
		return err
	}
	var ae *APIError
	errors.As(err, &ae)
	return newErr(op, name, providers.Retryable, fmt.Errorf("%w: the secret was deleted during the write: %w", providers.ErrConflict, ae))
}

func (p *Provider) putValue(ctx context.Context, op, name, id, token string, value []byte) (*sm.PutSecretValueOutput, error) {
	in := &sm.PutSecretValueInput{SecretId: aws.String(id)}
	if token != "" {
		in.ClientRequestToken = aws.String(token)
	}
	if utf8.Valid(value) {
		in.SecretString = aws.String(string(value))
	} else {
		in.SecretBinary = bytes.Clone(value)
	}
	out, err := call(p, ctx, op, name, bucketWrite, "PutSecretValue", value, func(ctx context.Context) (*sm.PutSecretValueOutput, error) {
		return p.api.PutSecretValue(ctx, in)
	})
	if err != nil && awsCode(err) == "ResourceExistsException" {
		// The token (the idempotency key) already names a version with
		// another value: the request can never succeed.
		var ae *APIError
		errors.As(err, &ae)
		return nil, newErr(op, name, providers.Permanent,
			fmt.Errorf("%w: idempotency key already used for a different value: %w", providers.ErrInvalid, ae))
	}
	return out, err
}

func (p *Provider) moveCurrent(ctx context.Context, op, name, id, to, from string) error {
	in := &sm.UpdateSecretVersionStageInput{SecretId: aws.String(id), VersionStage: aws.String(StageCurrent), MoveToVersionId: aws.String(to)}
	if from != "" && from != to {
		in.RemoveFromVersionId = aws.String(from)
	}
	_, err := call(p, ctx, op, name, bucketWrite, "UpdateSecretVersionStage", nil, func(ctx context.Context) (*sm.UpdateSecretVersionStageOutput, error) {
		return p.api.UpdateSecretVersionStage(ctx, in)
	})
	return err
}

// syncTags brings the secret's tags from old to want: removals first, so
// the 50-tag limit holds throughout.
func (p *Provider) syncTags(ctx context.Context, op, name, id string, old, want map[string]string) error {
	if len(want) > MaxTags {
		return errInvalid(op, name, "%d tags, at most %d allowed", len(want), MaxTags)
	}
	set, remove := tagDiff(old, want)
	if len(remove) > 0 {
		if _, err := call(p, ctx, op, name, bucketTag, "UntagResource", nil, func(ctx context.Context) (*sm.UntagResourceOutput, error) {
			return p.api.UntagResource(ctx, &sm.UntagResourceInput{SecretId: aws.String(id), TagKeys: remove})
		}); err != nil {
			return err
		}
	}
	if len(set) > 0 {
		if _, err := call(p, ctx, op, name, bucketTag, "TagResource", nil, func(ctx context.Context) (*sm.TagResourceOutput, error) {
			return p.api.TagResource(ctx, &sm.TagResourceInput{SecretId: aws.String(id), Tags: tagList(set)})
		}); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) syncDescription(ctx context.Context, op, name, id, want, have string) error {
	if want == "" || want == have {
		return nil
	}
	_, err := call(p, ctx, op, name, bucketWrite, "UpdateSecret", nil, func(ctx context.Context) (*sm.UpdateSecretOutput, error) {
		return p.api.UpdateSecret(ctx, &sm.UpdateSecretInput{SecretId: aws.String(id), Description: aws.String(want)})
	})
	return err
}

// Get implements providers.Provider: the AWSCURRENT version, or the
// version whose VersionId is version. A secret scheduled for deletion is
// not found. Tags come from DescribeSecret; UpdatedAt is the version's
// creation time.
func (p *Provider) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	const op = "get"
	if err := p.begin(ctx, op, name); err != nil {
		return nil, err
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := SecretID(name)
	d, err := p.describe(ctx, op, name, id)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errNotFound(op, name, "")
	}
	if d.DeletedDate != nil {
		return nil, errNotFound(op, name, "scheduled for deletion")
	}
	in := &sm.GetSecretValueInput{SecretId: aws.String(id)}
	if version != "" {
		if !versionIDOK(version) {
			return nil, errNotFound(op, name, "no such version")
		}
		in.VersionId = aws.String(version)
	}
	out, err := call(p, ctx, op, name, bucketRead, "GetSecretValue", nil, func(ctx context.Context) (*sm.GetSecretValueOutput, error) {
		return p.api.GetSecretValue(ctx, in)
	})
	if err != nil {
		if awsCode(err) == "InvalidRequestException" {
			return nil, errNotFound(op, name, "scheduled for deletion")
		}
		return nil, err
	}
	var value []byte
	if out.SecretString != nil {
		value = []byte(*out.SecretString)
	} else {
		value = bytes.Clone(out.SecretBinary)
	}
	return &providers.Secret{Name: name, Version: aws.ToString(out.VersionId), Value: value, Tags: tagMap(d.Tags),
		UpdatedAt: aws.ToTime(out.CreatedDate)}, nil
}

// Delete implements providers.Provider: DeleteSecret with
// Config.RecoveryWindowDays, or ForceDeleteWithoutRecovery with req.Force
// (also for a secret already scheduled for deletion). A primary secret's
// replicas (Config.ReplicaRegions) are removed first with
// RemoveRegionsFromReplication, since AWS deletes no primary secret that
// still has replicas. Deleting a missing secret, or soft-deleting one
// already scheduled, is ErrNotFound.
func (p *Provider) Delete(ctx context.Context, req providers.DeleteRequest) error {
	const op = "delete"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return err
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := SecretID(name)
	d, err := p.describe(ctx, op, name, id)
	if err != nil {
		return err
	}
	if d == nil {
		return errNotFound(op, name, "")
	}
	if d.DeletedDate != nil && !req.Force {
		return errNotFound(op, name, "already scheduled for deletion")
	}
	if !req.Adopt && !providers.IsOwnedBy(tagMap(d.Tags), req.Owner) {
		return errNotOwned(op, name)
	}
	if err := p.removeReplicas(ctx, op, name, id, d); err != nil {
		return err
	}
	in := &sm.DeleteSecretInput{SecretId: aws.String(id)}
	if req.Force {
		in.ForceDeleteWithoutRecovery = aws.Bool(true)
	} else {
		in.RecoveryWindowInDays = aws.Int64(int64(p.cfg.RecoveryWindowDays))
	}
	_, err = call(p, ctx, op, name, bucketDelete, "DeleteSecret", nil, func(ctx context.Context) (*sm.DeleteSecretOutput, error) {
		return p.api.DeleteSecret(ctx, in)
	})
	if err != nil && awsCode(err) == "InvalidRequestException" && !req.Force {
		return errNotFound(op, name, "already scheduled for deletion")
	}
	return err
}

// removeReplicas deletes the replicas of a primary secret (AWS deletes no
// primary secret that still has replicas, forced or not: it answers
// InvalidParameterException). A replica is deleted at once; the primary
// then goes as Delete says.
func (p *Provider) removeReplicas(ctx context.Context, op, name, id string, d *sm.DescribeSecretOutput) error {
	var regions []string
	for _, r := range d.ReplicationStatus {
		if reg := aws.ToString(r.Region); reg != "" {
			regions = append(regions, reg)
		}
	}
	if len(regions) == 0 {
		return nil
	}
	_, err := call(p, ctx, op, name, bucketWrite, "RemoveRegionsFromReplication", nil, func(ctx context.Context) (*sm.RemoveRegionsFromReplicationOutput, error) {
		return p.api.RemoveRegionsFromReplication(ctx, &sm.RemoveRegionsFromReplicationInput{SecretId: aws.String(id), RemoveReplicaRegions: regions})
	})
	return err
}

// replicate adds the replicas Config.ReplicaRegions names that the
// secret described by d lacks (ReplicateSecretToRegions).
func (p *Provider) replicate(ctx context.Context, op, name, id string, d *sm.DescribeSecretOutput) error {
	var add []types.ReplicaRegionType
	for _, r := range p.cfg.ReplicaRegions {
		if !slices.ContainsFunc(d.ReplicationStatus, func(s types.ReplicationStatusType) bool { return aws.ToString(s.Region) == r }) {
			add = append(add, smReplica(r))
		}
	}
	if len(add) == 0 {
		return nil
	}
	_, err := call(p, ctx, op, name, bucketWrite, "ReplicateSecretToRegions", nil, func(ctx context.Context) (*sm.ReplicateSecretToRegionsOutput, error) {
		return p.api.ReplicateSecretToRegions(ctx, &sm.ReplicateSecretToRegionsInput{SecretId: aws.String(id), AddReplicaRegions: add})
	})
	return err
}

// Versions implements providers.Versioner: every version AWS still keeps
// (deprecated ones included), oldest first; the AWSCURRENT one is Current.
// IdempotencyKey is empty: the VersionId is ClientRequestToken of it.
func (p *Provider) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	const op = "versions"
	if err := p.begin(ctx, op, name); err != nil {
		return nil, err
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := SecretID(name)
	d, err := p.describe(ctx, op, name, id)
	if err != nil {
		return nil, err
	}
	if d == nil || d.DeletedDate != nil {
		return nil, errNotFound(op, name, "")
	}
	var infos []providers.VersionInfo
	var next *string
	for {
		out, err := call(p, ctx, op, name, bucketList, "ListSecretVersionIds", nil, func(ctx context.Context) (*sm.ListSecretVersionIdsOutput, error) {
			return p.api.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(id),
				IncludeDeprecated: aws.Bool(true), MaxResults: aws.Int32(100), NextToken: next})
		})
		if err != nil {
			return nil, err
		}
		for _, v := range out.Versions {
			infos = append(infos, providers.VersionInfo{Version: aws.ToString(v.VersionId), CreatedAt: aws.ToTime(v.CreatedDate),
				Current: slices.Contains(v.VersionStages, StageCurrent)})
		}
		if out.NextToken == nil || *out.NextToken == "" {
			break
		}
		next = out.NextToken
	}
	sort.SliceStable(infos, func(i, j int) bool {
		if !infos[i].CreatedAt.Equal(infos[j].CreatedAt) {
			return infos[i].CreatedAt.Before(infos[j].CreatedAt)
		}
		return !infos[i].Current && infos[j].Current
	})
	return infos, nil
}

// UpdateTags implements providers.TagUpdater with TagResource and
// UntagResource (and UpdateSecret for a new description): no new version.
func (p *Provider) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	const op = "update_tags"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return err
	}
	if err := checkDescription(op, name, req.Description); err != nil {
		return err
	}
	extra := extraTags(req.Tags)
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := SecretID(name)
	d, err := p.describe(ctx, op, name, id)
	if err != nil {
		return err
	}
	if d == nil || d.DeletedDate != nil {
		return errNotFound(op, name, "")
	}
	old := tagMap(d.Tags)
	if !req.Adopt && !providers.IsOwnedBy(old, req.Owner) {
		return errNotOwned(op, name)
	}
	if err := p.syncTags(ctx, op, name, id, old, desiredTags(old, req.Owner, extra, false, req.Adopt)); err != nil {
		return err
	}
	return p.syncDescription(ctx, op, name, id, req.Description, aws.ToString(d.Description))
}

func smReplica(region string) types.ReplicaRegionType {
	return types.ReplicaRegionType{Region: aws.String(region)}
}
