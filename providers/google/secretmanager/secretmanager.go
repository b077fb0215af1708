package secretmanager

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	sm "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"go.uber.org/zap"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/internal/tokens"
)

// Name is the provider's key_management_system name (LiteLLM's).
const Name = "google_secret_manager"

// TeamOptions are the options a team's settings may set: its own project,
// replication policy, locations and version hygiene. Never the endpoint,
// plaintext transport, CA bundle or credentials file.
var TeamOptions = []string{OptionProject, OptionReplication, OptionLocations, OptionSupersededGrace, OptionDestroyGrace}

// Register adds the provider to r under Name and declares TeamOptions.
func Register(r *providers.Registry) {
	r.Register(Name, Factory)
	r.AllowTeamOptions(Name, TeamOptions...)
}

// Factory builds a provider from registry options (see ConfigFromOptions).
func Factory(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	c, err := ConfigFromOptions(cfg.Options, cfg.Getenv)
	if err != nil {
		return nil, err
	}
	p, err := New(ctx, c, cfg.Logger)
	if err != nil {
		return nil, err
	}
	p.quotas = cfg.Quotas
	return p, nil
}

// maxMetaRetries bounds the re-reads after an etag conflict on the
// secret's metadata.
const maxMetaRetries = 10

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Provider writes virtual keys to Google Secret Manager: one secret per
// name, one version per write. It is safe for concurrent use.
type Provider struct {
	cfg    Config
	client *sm.Client
	lim    *limiters
	quotas providers.Quotas // cluster-wide quotas, nil for none
	log    *zap.Logger
	parent string
	closed atomic.Bool
}

// New builds a provider for a validated config (zero fields defaulted).
func New(ctx context.Context, c Config, log *zap.Logger) (*Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.withDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	p := &Provider{
		cfg: c,
		lim: limitersFor(limiterKey{endpoint: c.Endpoint, project: c.Project,
			writes: c.ProjectWritesPerMinute, reads: c.ReadsPerMinute, access: c.AccessPerMinute,
			window: c.quotaWindow, perSec: c.SecretWritesPerSecond}),
		log:    log,
		parent: "projects/" + c.Project,
	}
	// Reads and accesses take their tokens per RPC, so that each page of a
	// listing does too (see limitRPC).
	opts := []option.ClientOption{option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(p.limitRPC))}
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(c.Endpoint))
	}
	switch {
	case c.Insecure:
		opts = append(opts, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	default:
		if c.CABundle != "" {
			pem, err := os.ReadFile(c.CABundle)
			if err != nil {
				return nil, fmt.Errorf("secretmanager: Config.CABundle (option %q): cannot read the file", OptionCABundle)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("secretmanager: Config.CABundle (option %q) holds no PEM certificate", OptionCABundle)
			}
			opts = append(opts, option.WithGRPCDialOption(grpc.WithTransportCredentials(
				credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))))
		}
		// Calls carry ts's tokens. Google answers a token it no longer
		// accepts with UNAUTHENTICATED, and ts.Intercept sends the call
		// once more with a new one; it runs inside limitRPC, so the
		// retry takes no second limiter token.
		build := c.credentials
		if build == nil {
			build = tokens.Detect(c.CredentialsFile, sm.DefaultAuthScopes())
		}
		ts, err := tokens.New(build, Name, log)
		if err != nil {
			return nil, fmt.Errorf("secretmanager: cannot load the credentials: %w", err)
		}
		opts = append(opts, option.WithAuthCredentials(ts.Credentials()),
			option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(ts.Intercept)))
	}
	client, err := sm.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("secretmanager: cannot build the client: %w", err)
	}
	// keyrelay's retry policy (and its limiter) decides on retries: the
	// client's own would hide throttling and hold workers for a minute.
	client.CallOptions = &sm.CallOptions{}
	p.client = client
	return p, nil
}

// Config returns the provider's configuration, defaults applied.
func (p *Provider) Config() Config { return p.cfg }

// Close releases the gRPC connection.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.client.Close()
}

// Capabilities: versions stay readable until hygiene disables them; no
// soft delete (DeleteSecret is final); tags are kept in annotations.
func (p *Provider) Capabilities() providers.Capabilities {
	return providers.Capabilities{Versions: true, Tags: true}
}

// SecretName returns the full resource name of name's secret.
func (p *Provider) SecretName(name string) string {
	return p.parent + "/secrets/" + SecretID(name)
}

func (p *Provider) begin(ctx context.Context, op, name string) (context.Context, context.CancelFunc, error) {
	if p.closed.Load() {
		return ctx, func() {}, newErr(op, name, providers.Permanent, ErrClosed, "")
	}
	if err := ctx.Err(); err != nil {
		return ctx, func() {}, ctxErr(op, name, err)
	}
	if name == "" || len(name) > MaxNameLength {
		return ctx, func() {}, newErr(op, name, providers.Permanent, providers.ErrInvalid, "name must be 1 to %d bytes", MaxNameLength)
	}
	if !utf8.ValidString(name) {
		// The name goes into an annotation: protobuf strings are UTF-8.
		return ctx, func() {}, newErr(op, name, providers.Permanent, providers.ErrInvalid, "name is not valid UTF-8")
	}
	if _, ok := ctx.Deadline(); !ok {
		c, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		return c, cancel, nil
	}
	return ctx, func() {}, nil
}

func (p *Provider) replication() *secretmanagerpb.Replication {
	if p.cfg.Replication == ReplicationUserManaged {
		um := &secretmanagerpb.Replication_UserManaged{}
		for _, l := range p.cfg.Locations {
			um.Replicas = append(um.Replicas, &secretmanagerpb.Replication_UserManaged_Replica{Location: l})
		}
		return &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_UserManaged_{UserManaged: um}}
	}
	return &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}
}

func codeOf(err error) codes.Code {
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// stampOf is the providers.PutResult.Stamp of version v: its create_time
// (RFC 3339, UTC, nanoseconds), "" when Secret Manager sent none. A
// re-created secret's version of the same number is created later, so
// Retire tells them apart by it (RetireRequest.ReplacedBy).
func stampOf(v *secretmanagerpb.SecretVersion) string {
	if v.GetCreateTime() == nil {
		return ""
	}
	return v.GetCreateTime().AsTime().UTC().Format(time.RFC3339Nano)
}

func versionNumber(versionName string) (int64, bool) {
	i := strings.LastIndexByte(versionName, '/')
	n, err := strconv.ParseInt(versionName[i+1:], 10, 64)
	return n, err == nil && n > 0
}

// Put writes req.Value as a new version: CreateSecret the first time, then
// AddSecretVersion; the tags, description and the version's idempotency
// key go to the secret's annotations (UpdateSecret with its etag).
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	ctx, cancel, err := p.begin(ctx, op, req.Name)
	defer cancel()
	if err != nil {
		return providers.PutResult{}, err
	}
	if len(req.Value) == 0 {
		return providers.PutResult{}, newErr(op, req.Name, providers.Permanent, providers.ErrInvalid, "empty value")
	}
	if len(req.Value) > MaxValueSize {
		return providers.PutResult{}, newErr(op, req.Name, providers.Permanent, providers.ErrInvalid, "value exceeds %d bytes", MaxValueSize)
	}
	if !utf8.ValidString(req.Description) {
		return providers.PutResult{}, newErr(op, req.Name, providers.Permanent, providers.ErrInvalid, "description is not valid UTF-8")
	}
	full := p.SecretName(req.Name)
	tags := providers.OwnerTags(req.Owner, extraTags(req.Tags))

	sec, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
	created, rpc := false, "GetSecret"
	if codeOf(err) == codes.NotFound {
		rpc = "CreateSecret"
		if err := p.wait(ctx, op, req.Name, p.lim.project); err != nil {
			return providers.PutResult{}, err
		}
		ann := map[string]string{AnnotationTags: encodeTags(tags), AnnotationName: req.Name}
		if req.Description != "" {
			ann[AnnotationDescription] = req.Description
		}
		sec, err = p.client.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
			Parent:   p.parent,
			SecretId: SecretID(req.Name),
			Secret:   &secretmanagerpb.Secret{Replication: p.replication(), Labels: labelsFor(tags), Annotations: ann},
		})
		switch codeOf(err) {
		case codes.OK:
			created = true
		case codes.AlreadyExists: // a concurrent writer created it
			rpc = "GetSecret"
			sec, err = p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
		}
	}
	if err != nil {
		return providers.PutResult{}, classify(ctx, op, req.Name, rpc, err)
	}
	if !created {
		if !req.Adopt && !providers.IsOwnedBy(tagsOf(sec.GetAnnotations()), req.Owner) {
			return providers.PutResult{}, newErr(op, req.Name, providers.Permanent, providers.ErrNotOwned, "secret exists and is not owned by this key")
		}
		if req.IdempotencyKey != "" {
			v, err := p.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: full + "/versions/latest"})
			switch {
			case err == nil:
				n, _ := versionNumber(v.GetName())
				if v.GetState() != secretmanagerpb.SecretVersion_ENABLED {
					break
				}
				rec, recorded := sec.GetAnnotations()[eventAnnotation(n)]
				if recorded && rec == eventValue(req.IdempotencyKey) {
					return providers.PutResult{Version: strconv.FormatInt(n, 10), Duplicate: true, Stamp: stampOf(v)}, nil
				}
				if !recorded {
					// An earlier attempt of this write may have added the
					// version and lost its answer (a deadline) before it
					// recorded the event: the same owner and value mean it
					// is this event's version. Record it instead of writing
					// a second one.
					if dup, derr := p.adoptUnrecorded(ctx, op, req, sec, v.GetName(), n); derr != nil {
						return providers.PutResult{}, derr
					} else if dup {
						return providers.PutResult{Version: strconv.FormatInt(n, 10), Duplicate: true, Stamp: stampOf(v)}, nil
					}
				}
			case codeOf(err) != codes.NotFound:
				return providers.PutResult{}, classify(ctx, op, req.Name, "GetSecretVersion", err)
			}
		}
	}

	if !created {
		// Tags and description first, under the etag: a failure here
		// leaves nothing written. The event id is recorded below from
		// the secret this update returns (its new etag and annotations).
		sec, err = p.updateMeta(ctx, op, req.Name, sec, func(s *secretmanagerpb.Secret) (bool, error) {
			ann := maps.Clone(s.GetAnnotations())
			if ann == nil {
				ann = map[string]string{}
			}
			if !req.Adopt && !providers.IsOwnedBy(tagsOf(ann), req.Owner) {
				return false, newErr(op, req.Name, providers.Permanent, providers.ErrNotOwned, "secret changed owner during the write")
			}
			ann[AnnotationTags] = encodeTags(tags)
			ann[AnnotationName] = req.Name
			if req.Description != "" {
				ann[AnnotationDescription] = req.Description
			}
			labels := labelsFor(tags)
			if maps.Equal(ann, s.GetAnnotations()) && maps.Equal(labels, s.GetLabels()) {
				return false, nil
			}
			s.Annotations, s.Labels = ann, labels
			return true, nil
		})
		if err != nil {
			return providers.PutResult{}, err
		}
	}

	if err := p.wait(ctx, op, req.Name, p.lim.project, p.lim.secret(full)); err != nil {
		return providers.PutResult{}, err
	}
	c := int64(crc32.Checksum(req.Value, crcTable))
	v, err := p.client.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
		Parent:  full,
		Payload: &secretmanagerpb.SecretPayload{Data: req.Value, DataCrc32C: &c},
	})
	if err != nil {
		return providers.PutResult{}, classify(ctx, op, req.Name, "AddSecretVersion", err)
	}
	n, ok := versionNumber(v.GetName())
	if !ok {
		return providers.PutResult{}, newErr(op, req.Name, providers.Retryable, providers.ErrUnavailable, "AddSecretVersion returned no version number")
	}
	res := providers.PutResult{Version: strconv.FormatInt(n, 10), Created: created, Stamp: stampOf(v)}

	// Record the event id that wrote version n. The value is written
	// already, so a failure here does not fail the Put (a retry would
	// write another version); it only loses deduplication of a
	// redelivery of this event.
	if req.IdempotencyKey != "" {
		_, err = p.updateMeta(ctx, op, req.Name, sec, func(s *secretmanagerpb.Secret) (bool, error) {
			ann := maps.Clone(s.GetAnnotations())
			if ann == nil {
				ann = map[string]string{}
			}
			ann[eventAnnotation(n)] = eventValue(req.IdempotencyKey)
			pruneEvents(ann, n)
			s.Annotations = ann
			return true, nil
		})
		if err != nil {
			p.log.Warn("cannot record the version's event id; a redelivery of this event would write again",
				zap.String("provider", Name), zap.String("version", res.Version), zap.Error(err))
		}
	}
	p.hygiene(ctx, req.Name, full)
	return res, nil
}

// adoptUnrecorded reports whether version n, which has no recorded event,
// holds req.Value; if so it records req's event for it.
func (p *Provider) adoptUnrecorded(ctx context.Context, op string, req providers.PutRequest, sec *secretmanagerpb.Secret, version string, n int64) (bool, error) {
	acc, err := p.client.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: version})
	if err != nil {
		return false, classify(ctx, op, req.Name, "AccessSecretVersion", err)
	}
	data, err := payloadData(op, req.Name, acc)
	if err != nil {
		// A corrupted read says nothing about the stored value: writing
		// another version on it could duplicate this event's.
		return false, err
	}
	if !bytes.Equal(data, req.Value) {
		return false, nil
	}
	_, err = p.updateMeta(ctx, op, req.Name, sec, func(s *secretmanagerpb.Secret) (bool, error) {
		ann := maps.Clone(s.GetAnnotations())
		if ann == nil {
			ann = map[string]string{}
		}
		if _, ok := ann[eventAnnotation(n)]; ok {
			return false, nil // recorded meanwhile (by the earlier attempt)
		}
		ann[eventAnnotation(n)] = eventValue(req.IdempotencyKey)
		pruneEvents(ann, n)
		s.Annotations = ann
		return true, nil
	})
	if err != nil {
		return false, err
	}
	return true, nil
}

// payloadData returns the data of an AccessSecretVersion answer after
// checking it against the answer's data_crc32c (Google sends one with
// every payload; an answer without it is taken as it is). Every read of a
// payload goes through it. A mismatch, data corrupted in transit, is a
// retryable ErrUnavailable: a new read may well be intact.
func payloadData(op, name string, resp *secretmanagerpb.AccessSecretVersionResponse) ([]byte, error) {
	data := resp.GetPayload().GetData()
	if c := resp.GetPayload().DataCrc32C; c != nil && int64(crc32.Checksum(data, crcTable)) != *c {
		return nil, newErr(op, name, providers.Retryable, providers.ErrUnavailable, "payload failed its CRC32C check")
	}
	return data, nil
}

// updateMeta applies change to the secret's labels and annotations with
// UpdateSecret under the secret's etag, re-reading and re-applying after
// an etag conflict (Google answers a stale etag with FAILED_PRECONDITION).
// It returns the secret as it now is: UpdateSecret's answer, with the new
// etag, or sec when change had nothing to do. A caller that updates again
// must build on what updateMeta returned, never on the copy it read
// before: that copy's etag is stale, and on a server that does not check
// etags its annotations would undo this update.
func (p *Provider) updateMeta(ctx context.Context, op, name string, sec *secretmanagerpb.Secret, change func(*secretmanagerpb.Secret) (bool, error)) (*secretmanagerpb.Secret, error) {
	for attempt := 0; ; attempt++ {
		s := &secretmanagerpb.Secret{Name: sec.GetName(), Etag: sec.GetEtag(), Labels: sec.GetLabels(), Annotations: sec.GetAnnotations()}
		ok, err := change(s)
		if err != nil || !ok {
			return sec, err
		}
		if err := p.wait(ctx, op, name, p.lim.project); err != nil {
			return sec, err
		}
		updated, err := p.client.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
			Secret:     s,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels", "annotations"}},
		})
		if err == nil {
			if updated.GetName() == "" || updated.GetEtag() == "" {
				// An answer without the resource: read it, so the next
				// update has the current etag.
				if fresh, gerr := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: sec.GetName()}); gerr == nil {
					return fresh, nil
				}
				return s, nil
			}
			return updated, nil
		}
		if codeOf(err) != codes.FailedPrecondition || attempt >= maxMetaRetries {
			return sec, classify(ctx, op, name, "UpdateSecret", err)
		}
		// Etag mismatch: a concurrent writer changed the secret.
		if err := ctxtime.Sleep(ctx, time.Duration(rand.Int64N(int64(10*time.Millisecond)<<min(attempt, 4)))); err != nil {
			return sec, ctxErr(op, name, err)
		}
		fresh, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: sec.GetName()})
		if err != nil {
			return sec, classify(ctx, op, name, "GetSecret", err)
		}
		sec = fresh
	}
}

// hygiene disables versions superseded more than SupersededGrace ago and
// destroys disabled ones superseded more than SupersededGrace +
// DestroyGrace ago. It is best effort: it never fails a Put, and stops
// when the project's read limiter (listing the versions) or write limiter
// has no token to spare.
func (p *Provider) hygiene(ctx context.Context, name, full string) {
	if p.cfg.SupersededGrace <= 0 {
		return
	}
	now := p.cfg.Now()
	it := p.client.ListSecretVersions(giveWay(ctx), &secretmanagerpb.ListSecretVersionsRequest{Parent: full})
	var vs []*secretmanagerpb.SecretVersion
	for {
		v, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			p.log.Debug("version hygiene: list failed", zap.String("provider", Name), zap.Error(classify(ctx, "hygiene", name, "ListSecretVersions", err)))
			return
		}
		vs = append(vs, v)
	}
	sortNewestFirst(vs)
	for i := 1; i < len(vs); i++ {
		v := vs[i]
		superseded := vs[i-1].GetCreateTime().AsTime()
		age := now.Sub(superseded)
		var err error
		switch {
		case v.GetState() == secretmanagerpb.SecretVersion_ENABLED && age >= p.cfg.SupersededGrace:
			if !p.lim.project.Allow() || !p.quotaNow(ctx, quotaWrite) {
				return
			}
			_, err = p.client.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v.GetName(), Etag: v.GetEtag()})
		case v.GetState() == secretmanagerpb.SecretVersion_DISABLED && p.cfg.DestroyGrace > 0 && age >= p.cfg.SupersededGrace+p.cfg.DestroyGrace:
			if !p.lim.project.Allow() || !p.quotaNow(ctx, quotaWrite) {
				return
			}
			_, err = p.client.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: v.GetName(), Etag: v.GetEtag()})
		}
		if err != nil {
			p.log.Debug("version hygiene failed", zap.String("provider", Name), zap.Error(classify(ctx, "hygiene", name, "UpdateVersionState", err)))
			return
		}
	}
}

func sortNewestFirst(vs []*secretmanagerpb.SecretVersion) {
	num := func(v *secretmanagerpb.SecretVersion) int64 { n, _ := versionNumber(v.GetName()); return n }
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && num(vs[j]) > num(vs[j-1]); j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
}

// Get reads version ("" for the latest) with the secret's tags.
func (p *Provider) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	const op = "get"
	ctx, cancel, err := p.begin(ctx, op, name)
	defer cancel()
	if err != nil {
		return nil, err
	}
	alias := "latest"
	if version != "" {
		n, err := strconv.ParseInt(version, 10, 64)
		if err != nil || n <= 0 {
			return nil, newErr(op, name, providers.Permanent, providers.ErrNotFound, "no such version")
		}
		alias = strconv.FormatInt(n, 10)
	}
	full := p.SecretName(name)
	sec, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
	if err != nil {
		return nil, classify(ctx, op, name, "GetSecret", err)
	}
	resp, err := p.client.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: full + "/versions/" + alias})
	if err != nil {
		if codeOf(err) == codes.FailedPrecondition && ctx.Err() == nil {
			// A disabled or destroyed version has no value to read.
			return nil, newErr(op, name, providers.Permanent, providers.ErrNotFound, "version is disabled or destroyed")
		}
		return nil, classify(ctx, op, name, "AccessSecretVersion", err)
	}
	data, err := payloadData(op, name, resp)
	if err != nil {
		return nil, err
	}
	n, _ := versionNumber(resp.GetName())
	out := &providers.Secret{
		Name:    name,
		Version: strconv.FormatInt(n, 10),
		Value:   append([]byte(nil), data...),
		Tags:    tagsOf(sec.GetAnnotations()),
	}
	if v, err := p.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: resp.GetName()}); err == nil {
		out.UpdatedAt = v.GetCreateTime().AsTime()
	}
	return out, nil
}

// Delete deletes the secret and all its versions (Secret Manager has no
// soft delete; Force changes nothing), after the ownership check, under
// the secret's etag.
func (p *Provider) Delete(ctx context.Context, req providers.DeleteRequest) error {
	const op = "delete"
	ctx, cancel, err := p.begin(ctx, op, req.Name)
	defer cancel()
	if err != nil {
		return err
	}
	full := p.SecretName(req.Name)
	sec, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
	if err != nil {
		return classify(ctx, op, req.Name, "GetSecret", err)
	}
	if !req.Adopt && !providers.IsOwnedBy(tagsOf(sec.GetAnnotations()), req.Owner) {
		return newErr(op, req.Name, providers.Permanent, providers.ErrNotOwned, "secret is not owned by this key")
	}
	if err := p.wait(ctx, op, req.Name, p.lim.project); err != nil {
		return err
	}
	err = p.client.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: full, Etag: sec.GetEtag()})
	return classify(ctx, op, req.Name, "DeleteSecret", err)
}

// Versions lists the secret's versions, newest first, with the event id
// that wrote each (for the newest MaxEventAnnotations).
func (p *Provider) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	const op = "versions"
	ctx, cancel, err := p.begin(ctx, op, name)
	defer cancel()
	if err != nil {
		return nil, err
	}
	full := p.SecretName(name)
	sec, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
	if err != nil {
		return nil, classify(ctx, op, name, "GetSecret", err)
	}
	it := p.client.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: full})
	var vs []*secretmanagerpb.SecretVersion
	for {
		v, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, classify(ctx, op, name, "ListSecretVersions", err)
		}
		vs = append(vs, v)
	}
	sortNewestFirst(vs)
	out := make([]providers.VersionInfo, 0, len(vs))
	for i, v := range vs {
		n, _ := versionNumber(v.GetName())
		out = append(out, providers.VersionInfo{
			Version:        strconv.FormatInt(n, 10),
			IdempotencyKey: sec.GetAnnotations()[eventAnnotation(n)],
			CreatedAt:      v.GetCreateTime().AsTime(),
			Current:        i == 0,
			Destroyed:      v.GetState() == secretmanagerpb.SecretVersion_DESTROYED,
		})
	}
	return out, nil
}

// UpdateTags replaces the extra tags (and the description, when set)
// without a new version, under the secret's etag. With Adopt the request's
// owner becomes the secret's.
func (p *Provider) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	const op = "update_tags"
	ctx, cancel, err := p.begin(ctx, op, req.Name)
	defer cancel()
	if err != nil {
		return err
	}
	if !utf8.ValidString(req.Description) {
		return newErr(op, req.Name, providers.Permanent, providers.ErrInvalid, "description is not valid UTF-8")
	}
	full := p.SecretName(req.Name)
	sec, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
	if err != nil {
		return classify(ctx, op, req.Name, "GetSecret", err)
	}
	_, err = p.updateMeta(ctx, op, req.Name, sec, func(s *secretmanagerpb.Secret) (bool, error) {
		cur := tagsOf(s.GetAnnotations())
		if !req.Adopt && !providers.IsOwnedBy(cur, req.Owner) {
			return false, newErr(op, req.Name, providers.Permanent, providers.ErrNotOwned, "secret is not owned by this key")
		}
		tags := providers.OwnerTags(providers.KeptOwner(cur, req.Owner, req.Adopt), extraTags(req.Tags))
		ann := maps.Clone(s.GetAnnotations())
		if ann == nil {
			ann = map[string]string{}
		}
		ann[AnnotationTags] = encodeTags(tags)
		if req.Description != "" {
			ann[AnnotationDescription] = req.Description
		}
		s.Annotations, s.Labels = ann, labelsFor(tags)
		return true, nil
	})
	return err
}

var (
	_ providers.Provider   = (*Provider)(nil)
	_ providers.Versioner  = (*Provider)(nil)
	_ providers.TagUpdater = (*Provider)(nil)
	_ providers.Closer     = (*Provider)(nil)
)
