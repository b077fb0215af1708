package conjur

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strconv"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/keyedlock"
	"github.com/keyrelay/keyrelay/providers"
)

// Name is the key_management_system name the provider registers under
// (LiteLLM's).
const Name = "cyberark"

// Annotation names besides providers' tag names.
const (
	// AnnotationEventVersion is the version the keyrelay-event annotation
	// belongs to.
	AnnotationEventVersion = "keyrelay-event-version"
	// AnnotationDescription holds PutRequest.Description.
	AnnotationDescription = "description"
)

// TeamOptions are the options a team's settings may set: only the policy
// branch its variables live in, never the appliance URL or credentials.
var TeamOptions = []string{OptionPolicyBranch}

// Register adds the provider to r under Name.
func Register(r *providers.Registry) {
	r.Register(Name, Factory)
	r.AllowTeamOptions(Name, TeamOptions...)
}

// Factory builds a provider from cfg.Options and cfg.Getenv (see
// ConfigFromOptions). It makes no network call; a bad configuration is a
// permanent error wrapping providers.ErrInvalid.
func Factory(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	c, err := ConfigFromOptions(cfg.Options, cfg.Getenv)
	if err != nil {
		return nil, providers.NewError(Name, "open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	return New(ctx, c, cfg.Logger)
}

// Provider stores keyrelay secrets as Conjur variables. It is safe for
// concurrent use.
type Provider struct {
	cfg Config
	c   *client
	log *zap.Logger

	// names serializes this instance's writers of one name, so that
	// Created and Duplicate are decided once per write.
	names keyedlock.Set
}

var (
	_ providers.Provider   = (*Provider)(nil)
	_ providers.Versioner  = (*Provider)(nil)
	_ providers.TagUpdater = (*Provider)(nil)
	_ providers.Closer     = (*Provider)(nil)
)

// New builds a provider. It makes no network call (it authenticates on
// first use). log may be nil.
func New(_ context.Context, cfg Config, log *zap.Logger) (*Provider, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, providers.NewError(Name, "open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, providers.NewError(Name, "open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Provider{cfg: cfg, c: c, log: log}, nil
}

// Capabilities: versions are readable (Conjur keeps the last 20), ownership
// and tags are annotations; there is no soft delete.
func (p *Provider) Capabilities() providers.Capabilities {
	return providers.Capabilities{Versions: true, SoftDelete: false, Tags: true}
}

// PolicyBranch is the branch this instance declares variables in.
func (p *Provider) PolicyBranch() string { return p.cfg.PolicyBranch }

// VariableID returns the full Conjur variable id of name, or ErrInvalid.
func (p *Provider) VariableID(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", invalid("id", name, err)
	}
	return VariableID(p.cfg.PolicyBranch, name), nil
}

// Close releases idle connections.
func (p *Provider) Close() error {
	p.c.close()
	return nil
}

// lock takes name's writer lock (see Provider.names).
func (p *Provider) lock(ctx context.Context, op, name string) (func(), error) {
	unlock, err := p.names.Lock(ctx, name)
	if err != nil {
		return nil, classify(ctx, op, name, err)
	}
	return unlock, nil
}

func (p *Provider) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, p.cfg.Timeout)
}

func reserved(k string) bool {
	switch k {
	case providers.ManagedByTag, providers.TeamTag, providers.KeyTag, providers.EventTag,
		AnnotationEventVersion, AnnotationEventHistory, AnnotationDescription:
		return true
	}
	return false
}

// annotations builds the annotations keyrelay writes for owner, extra tags
// and description; existing annotations not written again are cleared.
func annotations(owner providers.Owner, tags map[string]string, description string, existing map[string]string) (map[string]string, error) {
	a := map[string]string{
		providers.ManagedByTag: providers.ManagedByValue,
		providers.TeamTag:      owner.TeamID,
		providers.KeyTag:       owner.KeyID,
		AnnotationDescription:  description,
	}
	for k, v := range tags {
		if reserved(k) {
			continue
		}
		if !annotationKeyRE.MatchString(k) {
			return nil, fmt.Errorf("tag name %q must be 1-128 of A-Z a-z 0-9 _ . : / -", k)
		}
		a[k] = v
	}
	for k := range existing {
		if _, ok := a[k]; !ok && !reserved(k) {
			a[k] = ""
		}
	}
	return a, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// userTags are the annotations Get returns: empty (cleared) ones and the
// internal ones are left out.
func userTags(a map[string]string) map[string]string {
	out := make(map[string]string, len(a))
	for k, v := range a {
		if v == "" || k == AnnotationEventVersion || k == AnnotationEventHistory || k == providers.EventTag {
			continue
		}
		out[k] = v
	}
	return out
}

func notOwned(op, name string) error {
	return providers.NewError(Name, op, name, providers.Permanent, providers.ErrNotOwned)
}

func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// policyErr classifies a failed policy load into branch.
func (p *Provider) policyErr(ctx context.Context, op, name string, err error, what string) error {
	var ae *apiError
	if ctx.Err() == nil && errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusNotFound:
			return statusErr(op, name, ae.Status, http.StatusUnprocessableEntity, ae.Code, fmt.Sprintf("policy branch %q does not exist (create it, or set policy_branch)", p.cfg.PolicyBranch))
		case http.StatusForbidden:
			return fromStatus(op, name, 403, ae.Code, fmt.Sprintf("the role may not update policy branch %q, so it cannot %s", p.cfg.PolicyBranch, what))
		}
	}
	return classify(ctx, op, name, err)
}

// Put declares the variable in the policy branch (with ownership and event
// annotations) and adds the value as a new version.
//
// The event (req.IdempotencyKey) is declared against the version Put
// expects to write (keyrelay-event-version, and its entry in
// keyrelay-event-history) before the value is added. When another writer's
// version came in between, a second policy load records the version
// actually written; if that load fails, Put returns a retryable error (the
// value is written), and the retry finds the version by its value (see
// earlierWrite), records it and reports a Duplicate. A redelivery after
// newer versions is a Duplicate of the event's own version, or, once
// Conjur no longer retains it, a permanent ErrSuperseded: never a write.
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	if err := ctx.Err(); err != nil {
		return providers.PutResult{}, classify(ctx, op, req.Name, err)
	}
	if err := ValidateName(req.Name); err != nil {
		return providers.PutResult{}, invalid(op, req.Name, err)
	}
	if len(req.Value) == 0 {
		return providers.PutResult{}, invalid(op, req.Name, errors.New("empty value: Conjur does not store empty secrets"))
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	unlock, err := p.lock(ctx, op, req.Name)
	if err != nil {
		return providers.PutResult{}, err
	}
	defer unlock()
	id := VariableID(p.cfg.PolicyBranch, req.Name)

	r, err := p.c.resource(ctx, id)
	exists := true
	switch {
	case err != nil && isNotFound(err) && ctx.Err() == nil:
		exists, r = false, &resource{}
	case err != nil:
		return providers.PutResult{}, classify(ctx, op, req.Name, err)
	}
	cur := r.latest()
	existing := r.annotations()
	if exists {
		if !req.Adopt && !providers.IsOwnedBy(existing, req.Owner) {
			return providers.PutResult{}, notOwned(op, req.Name)
		}
		if req.IdempotencyKey != "" {
			v, err := p.earlierWrite(ctx, op, req, id, r, existing)
			if err != nil {
				return providers.PutResult{}, err
			}
			if v > 0 {
				return providers.PutResult{Version: strconv.Itoa(v), Duplicate: true}, nil
			}
		}
	}
	ann, err := annotations(req.Owner, req.Tags, req.Description, existing)
	if err != nil {
		return providers.PutResult{}, invalid(op, req.Name, err)
	}
	h := historyOf(existing).upTo(cur)
	if req.IdempotencyKey != "" {
		maps.Copy(ann, eventAnnotations(h, req.IdempotencyKey, cur+1))
	} else {
		ann[providers.EventTag], ann[AnnotationEventVersion], ann[AnnotationEventHistory] = "", strconv.Itoa(cur+1), h.String()
	}
	if err := p.loadPolicy(ctx, declarePolicy(req.Name, ann, sortedKeys(ann))); err != nil {
		return providers.PutResult{}, p.policyErr(ctx, op, req.Name, err, "declare variables")
	}
	if err := p.c.addSecret(ctx, id, req.Value); err != nil {
		return providers.PutResult{}, classify(ctx, op, req.Name, err)
	}
	r2, err := p.c.resource(ctx, id)
	if err != nil {
		return providers.PutResult{}, classify(ctx, op, req.Name, err)
	}
	v := r2.latest()
	if v != cur+1 && req.IdempotencyKey != "" {
		// Another writer (outside this process) got in between: record the
		// event against the version actually written.
		if err := p.recordEvent(ctx, req.Name, h, req.IdempotencyKey, v); err != nil {
			return providers.PutResult{}, unrecorded(p.policyErr(ctx, op, req.Name, err, "record the event of a write"), v)
		}
	}
	return providers.PutResult{Version: strconv.Itoa(v), Created: !exists || cur == 0}, nil
}

// unrecorded is the error of a Put that wrote version v but could not
// record its event: retryable whatever the cause, since the retry finds the
// version by its value and reports it a Duplicate (see earlierWrite).
func unrecorded(err error, v int) error {
	var pe *providers.Error
	if !errors.As(err, &pe) {
		return err
	}
	out := *pe
	if out.Kind == providers.Permanent {
		out.Kind = providers.Retryable
	}
	out.Err = fmt.Errorf("version %d was written but its event id was not recorded (a retry with the same idempotency key finds the version and records it): %w", v, pe.Err)
	return &out
}

func parseVersion(op, name, version string) (int, error) {
	if version == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(version)
	if err != nil || n < 1 {
		return 0, invalid(op, name, errors.New("version must be a positive integer"))
	}
	return n, nil
}

// Get reads the current version, or version when not "".
func (p *Provider) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	const op = "get"
	if err := ctx.Err(); err != nil {
		return nil, classify(ctx, op, name, err)
	}
	if err := ValidateName(name); err != nil {
		return nil, invalid(op, name, err)
	}
	n, err := parseVersion(op, name, version)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := VariableID(p.cfg.PolicyBranch, name)
	r, err := p.c.resource(ctx, id)
	if err != nil {
		return nil, classify(ctx, op, name, err)
	}
	cur := r.latest()
	if cur == 0 {
		return nil, fromStatus(op, name, 404, "", "the variable has no value")
	}
	if n == 0 {
		n = cur
	} else {
		found := false
		for _, s := range r.Secrets {
			found = found || s.Version == n
		}
		if !found {
			return nil, fromStatus(op, name, 404, "", "no such version")
		}
	}
	val, err := p.c.secret(ctx, id, n)
	if err != nil {
		return nil, classify(ctx, op, name, err)
	}
	return &providers.Secret{Name: name, Version: strconv.Itoa(n), Value: val, Tags: userTags(r.annotations())}, nil
}

// Delete removes the variable (and all its versions) from the policy
// branch. Force makes no difference: Conjur has no soft delete.
func (p *Provider) Delete(ctx context.Context, req providers.DeleteRequest) error {
	const op = "delete"
	if err := ctx.Err(); err != nil {
		return classify(ctx, op, req.Name, err)
	}
	if err := ValidateName(req.Name); err != nil {
		return invalid(op, req.Name, err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	unlock, err := p.lock(ctx, op, req.Name)
	if err != nil {
		return err
	}
	defer unlock()
	id := VariableID(p.cfg.PolicyBranch, req.Name)
	r, err := p.c.resource(ctx, id)
	if err != nil {
		return classify(ctx, op, req.Name, err)
	}
	if !req.Adopt && !providers.IsOwnedBy(r.annotations(), req.Owner) {
		return notOwned(op, req.Name)
	}
	if err := p.loadPolicy(ctx, deletePolicy(req.Name)); err != nil {
		return p.policyErr(ctx, op, req.Name, err, "delete variables; the variable was left in place")
	}
	return nil
}

// Versions lists the versions Conjur keeps (the last 20).
func (p *Provider) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	const op = "versions"
	if err := ctx.Err(); err != nil {
		return nil, classify(ctx, op, name, err)
	}
	if err := ValidateName(name); err != nil {
		return nil, invalid(op, name, err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	r, err := p.c.resource(ctx, VariableID(p.cfg.PolicyBranch, name))
	if err != nil {
		return nil, classify(ctx, op, name, err)
	}
	h := historyOf(r.annotations())
	cur := r.latest()
	out := make([]providers.VersionInfo, 0, len(r.Secrets))
	for _, s := range r.Secrets {
		out = append(out, providers.VersionInfo{Version: strconv.Itoa(s.Version), Current: s.Version == cur, IdempotencyKey: h.eventOf(s.Version)})
	}
	return out, nil
}

// UpdateTags replaces the extra tags and description (annotations) without
// writing a new version.
func (p *Provider) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	const op = "update-tags"
	if err := ctx.Err(); err != nil {
		return classify(ctx, op, req.Name, err)
	}
	if err := ValidateName(req.Name); err != nil {
		return invalid(op, req.Name, err)
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	unlock, err := p.lock(ctx, op, req.Name)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := p.c.resource(ctx, VariableID(p.cfg.PolicyBranch, req.Name))
	if err != nil {
		return classify(ctx, op, req.Name, err)
	}
	existing := r.annotations()
	if !req.Adopt && !providers.IsOwnedBy(existing, req.Owner) {
		return notOwned(op, req.Name)
	}
	ann, err := annotations(providers.KeptOwner(existing, req.Owner, req.Adopt), req.Tags, req.Description, existing)
	if err != nil {
		return invalid(op, req.Name, err)
	}
	if err := p.loadPolicy(ctx, declarePolicy(req.Name, ann, sortedKeys(ann))); err != nil {
		return p.policyErr(ctx, op, req.Name, err, "update annotations")
	}
	return nil
}
