package secretsmanager

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/keyrelay/keyrelay/providers"
)

// ReadPrimarySecret reads key from the secret named primary, which holds a
// JSON object of many keys: LiteLLM's primary_secret_name. A string member
// is returned as it is; any other JSON value (a number, a boolean, an
// object) as its JSON text. A missing member is ErrNotFound; a secret that
// is not a JSON object is ErrInvalid (permanent). Errors never quote the
// secret's content.
//
// p is any provider: the helper only calls Get(ctx, primary, "").
func ReadPrimarySecret(ctx context.Context, p providers.Provider, primary, key string) (string, error) {
	const op = "read_primary"
	s, err := p.Get(ctx, primary, "")
	if err != nil {
		return "", err
	}
	defer clear(s.Value)
	m, err := ParsePrimarySecret(s.Value)
	if err != nil {
		return "", newErr(op, primary, providers.Permanent, err)
	}
	v, ok := m[key]
	if !ok {
		return "", newErr(op, primary, providers.Permanent, fmt.Errorf("%w: no member %q in the primary secret", providers.ErrNotFound, key))
	}
	return v, nil
}

// ParsePrimarySecret parses a primary secret's value: a JSON object whose
// members are the secrets (strings as they are, other values as their JSON
// text). The error wraps providers.ErrInvalid and does not quote the value.
func ParsePrimarySecret(value []byte) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(value, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("%w: the primary secret is not a JSON object", providers.ErrInvalid)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			out[k] = s
			continue
		}
		out[k] = string(v)
	}
	return out, nil
}
