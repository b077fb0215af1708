package vault

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/api"
)

// Test hooks for the external test package.

// KVAPI is the narrow client interface, for fault-injecting wrappers.
type KVAPI = kvAPI

// WrapKV replaces the provider's KV client with wrap(current).
func WrapKV(p *Provider, wrap func(KVAPI) KVAPI) { p.kv = wrap(p.kv) }

// CurrentToken returns the token the provider uses now.
func CurrentToken(p *Provider) string { return p.auth.current() }

// KVFunc adapts functions to KVAPI; nil fields call Inner.
type KVFunc struct {
	Inner KVAPI
	Read  func(ctx context.Context, path string, data map[string][]string) (*api.Response, error)
	Write func(ctx context.Context, path string, data map[string]any) (*api.Secret, error)
}

func (k KVFunc) ReadRawWithDataWithContext(ctx context.Context, path string, data map[string][]string) (*api.Response, error) {
	if k.Read != nil {
		return k.Read(ctx, path, data)
	}
	return k.Inner.ReadRawWithDataWithContext(ctx, path, data)
}

func (k KVFunc) WriteWithContext(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	if k.Write != nil {
		return k.Write(ctx, path, data)
	}
	return k.Inner.WriteWithContext(ctx, path, data)
}

func (k KVFunc) JSONMergePatch(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	return k.Inner.JSONMergePatch(ctx, path, data)
}

func (k KVFunc) DeleteWithContext(ctx context.Context, path string) (*api.Secret, error) {
	return k.Inner.DeleteWithContext(ctx, path)
}

func (k KVFunc) ListWithContext(ctx context.Context, path string) (*api.Secret, error) {
	return k.Inner.ListWithContext(ctx, path)
}

// WrapTransport wraps the provider's HTTP transport (under the status
// recorder), e.g. to count the requests that reach Vault.
func WrapTransport(p *Provider, wrap func(http.RoundTripper) http.RoundTripper) {
	rt := p.client.CloneConfig().HttpClient.Transport.(*recordingTransport)
	rt.base = wrap(rt.base)
}
