package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/providers"
)

// kvAPI is the part of the Vault client the provider uses: the logical
// read, write, JSON merge patch, delete and list calls (*api.Logical).
type kvAPI interface {
	ListWithContext(ctx context.Context, path string) (*api.Secret, error)
	ReadRawWithDataWithContext(ctx context.Context, path string, data map[string][]string) (*api.Response, error)
	WriteWithContext(ctx context.Context, path string, data map[string]any) (*api.Secret, error)
	JSONMergePatch(ctx context.Context, path string, data map[string]any) (*api.Secret, error)
	DeleteWithContext(ctx context.Context, path string) (*api.Secret, error)
}

var _ kvAPI = (*api.Logical)(nil)

// do runs one request: it waits for the rate limiter, makes sure the token
// is valid, and classifies failures. A 404 is not an error here: it returns
// status 404 with whatever body Vault sent (KV v2 sends the version's
// metadata for a deleted or destroyed version). A 403 with a login-based
// token that Vault no longer accepts is repeated once after a new login.
func (p *Provider) do(ctx context.Context, op, name string, req func(ctx context.Context) (*api.Secret, error)) (*api.Secret, int, error) {
	for attempt := 0; ; attempt++ {
		if p.closed.Load() {
			return nil, 0, newErr(op, name, providers.Permanent, ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, newErr(op, name, providers.Retryable, err)
		}
		if p.limiter != nil {
			// A bulk call (providers.PriorityBulk) takes only the tokens
			// interactive calls leave.
			if d, err := providers.WaitTokens(ctx, p.limiter); err != nil {
				if cerr := ctx.Err(); cerr != nil {
					return nil, 0, newErr(op, name, providers.Retryable, cerr)
				}
				// The wait would outlast the context's deadline: keyrelay's
				// own limit (ErrOwnLimit), no call was made.
				e := newErr(op, name, providers.Throttled, fmt.Errorf("client rate limit (%v/s): %w", p.cfg.RateLimit, err))
				e.RetryAfter = d
				return nil, 0, e
			}
		}
		tok, err := p.auth.Token(ctx)
		if err != nil {
			return nil, 0, reOp(err, op, name)
		}
		cctx, ci := withCallInfo(ctx)
		sec, err := req(cctx)
		status := ci.status
		var re *api.ResponseError
		if errors.As(err, &re) {
			status = re.StatusCode
		}
		if status == 404 {
			return sec, 404, nil
		}
		if err != nil {
			if status == 403 && attempt == 0 && p.auth.recover(ctx, tok) {
				continue
			}
			return nil, status, p.classify(ctx, op, name, err, ci)
		}
		if status == 0 {
			status = 200
		}
		return sec, status, nil
	}
}

// reOp returns err with the *providers.Error's Op and Name set to the
// caller's (a login failure surfaces from the operation that needed it).
func reOp(err error, op, name string) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		c := *pe
		c.Op, c.Name = op, name
		return &c
	}
	return newErr(op, name, providers.Retryable, err)
}

func (p *Provider) read(ctx context.Context, op, name, path string, query url.Values) (*api.Secret, int, error) {
	return p.do(ctx, op, name, func(ctx context.Context) (*api.Secret, error) {
		resp, err := p.kv.ReadRawWithDataWithContext(ctx, path, query)
		if resp != nil {
			defer resp.Body.Close()
		}
		if resp != nil && resp.StatusCode == 404 {
			sec, perr := api.ParseSecret(resp.Body)
			if perr != nil && !errors.Is(perr, io.EOF) {
				return nil, err
			}
			if sec != nil && len(sec.Data) == 0 {
				sec = nil
			}
			return sec, err
		}
		if err != nil {
			return nil, err
		}
		return api.ParseSecret(resp.Body)
	})
}

func (p *Provider) write(ctx context.Context, op, name, path string, body map[string]any) (*api.Secret, int, error) {
	return p.do(ctx, op, name, func(ctx context.Context) (*api.Secret, error) {
		return p.kv.WriteWithContext(ctx, path, body)
	})
}

func (p *Provider) patch(ctx context.Context, op, name, path string, body map[string]any) (int, error) {
	_, status, err := p.do(ctx, op, name, func(ctx context.Context) (*api.Secret, error) {
		return p.kv.JSONMergePatch(ctx, path, body)
	})
	return status, err
}

// list LISTs path; a missing folder is an empty one.
func (p *Provider) list(ctx context.Context, op, path string) ([]string, error) {
	sec, status, err := p.do(ctx, op, "", func(ctx context.Context) (*api.Secret, error) {
		return p.kv.ListWithContext(ctx, path)
	})
	if err != nil {
		return nil, err
	}
	if status == 404 || sec == nil || sec.Data == nil {
		return nil, nil
	}
	raw, ok := sec.Data["keys"].([]any)
	if !ok {
		return nil, newErr(op, "", providers.Retryable, fmt.Errorf("%w: %w: LIST %s: no keys", providers.ErrUnavailable, errMalformed, path))
	}
	keys := make([]string, 0, len(raw))
	for _, k := range raw {
		if s, ok := k.(string); ok && s != "" {
			keys = append(keys, s)
		}
	}
	return keys, nil
}

func (p *Provider) remove(ctx context.Context, op, name, path string) (int, error) {
	_, status, err := p.do(ctx, op, name, func(ctx context.Context) (*api.Secret, error) {
		return p.kv.DeleteWithContext(ctx, path)
	})
	return status, err
}

// versionMeta is one version's entry in KV v2 metadata.
type versionMeta struct {
	created   time.Time
	deleted   bool // deletion_time set and passed
	destroyed bool
}

func (v versionMeta) gone() bool { return v.deleted || v.destroyed }

// metadata is a parsed KV v2 metadata response.
type metadata struct {
	current  uint64
	versions map[uint64]versionMeta
	custom   map[string]string
}

// latestGone reports whether the secret has no readable current version.
func (m *metadata) latestGone() bool {
	v, ok := m.versions[m.current]
	return m.current == 0 || !ok || v.gone()
}

// dataResponse is a parsed KV v2 data read.
type dataResponse struct {
	version uint64
	meta    versionMeta
	custom  map[string]string
	data    map[string]any // nil when deleted or destroyed
}

var errMalformed = errors.New("malformed response")

func parseMetadata(sec *api.Secret) (*metadata, error) {
	if sec == nil || sec.Data == nil {
		return nil, errMalformed
	}
	cur, err := toUint(sec.Data["current_version"])
	if err != nil {
		return nil, fmt.Errorf("%w: current_version: %v", errMalformed, err)
	}
	m := &metadata{current: cur, versions: map[uint64]versionMeta{}, custom: toStringMap(sec.Data["custom_metadata"])}
	vs, _ := sec.Data["versions"].(map[string]any)
	for k, raw := range vs {
		n, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: version %q", errMalformed, k)
		}
		fields, _ := raw.(map[string]any)
		m.versions[n] = parseVersionMeta(fields)
	}
	return m, nil
}

func parseData(sec *api.Secret) (*dataResponse, error) {
	if sec == nil || sec.Data == nil {
		return nil, errMalformed
	}
	md, ok := sec.Data["metadata"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: no metadata (is the mount KV version 2?)", errMalformed)
	}
	v, err := toUint(md["version"])
	if err != nil {
		return nil, fmt.Errorf("%w: version: %v", errMalformed, err)
	}
	d := &dataResponse{version: v, meta: parseVersionMeta(md), custom: toStringMap(md["custom_metadata"])}
	d.data, _ = sec.Data["data"].(map[string]any)
	return d, nil
}

func parseVersionMeta(f map[string]any) versionMeta {
	var vm versionMeta
	if s, _ := f["created_time"].(string); s != "" {
		vm.created, _ = time.Parse(time.RFC3339Nano, s)
	}
	if s, _ := f["deletion_time"].(string); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil && !t.After(time.Now()) {
			vm.deleted = true
		}
	}
	vm.destroyed, _ = f["destroyed"].(bool)
	return vm
}

func toUint(v any) (uint64, error) {
	switch n := v.(type) {
	case json.Number:
		return strconv.ParseUint(n.String(), 10, 64)
	case float64:
		if n < 0 {
			return 0, errors.New("negative")
		}
		return uint64(n), nil
	case nil:
		return 0, errors.New("missing")
	}
	return 0, fmt.Errorf("unexpected %T", v)
}

func toStringMap(v any) map[string]string {
	m, _ := v.(map[string]any)
	out := make(map[string]string, len(m))
	for k, x := range m {
		if s, ok := x.(string); ok {
			out[k] = s
		}
	}
	return out
}
