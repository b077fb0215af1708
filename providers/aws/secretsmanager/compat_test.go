package secretsmanager_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/settings"
)

// litellm does what LiteLLM's aws_secret_manager_v2 does on the wire:
// CreateSecret with Name = prefix+alias, the raw SecretString, a random
// uuid4 ClientRequestToken, the description and the tags from
// key_management_settings; PutSecretValue for an in-place rotation; reads
// take response["SecretString"]; deletes use a 7-day window.
type litellm struct {
	c *sm.Client
	t *testing.T
}

func (l litellm) write(name, value, description string, tags map[string]string) {
	l.t.Helper()
	in := &sm.CreateSecretInput{Name: aws.String(name), SecretString: aws.String(value), ClientRequestToken: aws.String(uuid.NewString())}
	if description != "" {
		in.Description = aws.String(description)
	}
	for k, v := range tags {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	if _, err := l.c.CreateSecret(ctxT(l.t), in); err != nil {
		l.t.Fatalf("LiteLLM CreateSecret: %v", err)
	}
}

func (l litellm) rotate(name, value string) {
	l.t.Helper()
	if _, err := l.c.PutSecretValue(ctxT(l.t), &sm.PutSecretValueInput{SecretId: aws.String(name), SecretString: aws.String(value),
		ClientRequestToken: aws.String(uuid.NewString())}); err != nil {
		l.t.Fatalf("LiteLLM PutSecretValue: %v", err)
	}
}

func (l litellm) read(name string) string {
	l.t.Helper()
	out, err := l.c.GetSecretValue(ctxT(l.t), &sm.GetSecretValueInput{SecretId: aws.String(name)})
	if err != nil {
		l.t.Fatalf("LiteLLM GetSecretValue: %v", err)
	}
	if out.SecretString == nil {
		l.t.Fatalf("LiteLLM reads SecretString; the secret has none")
	}
	return *out.SecretString
}

func (l litellm) delete(name string) {
	l.t.Helper()
	if _, err := l.c.DeleteSecret(ctxT(l.t), &sm.DeleteSecretInput{SecretId: aws.String(name), RecoveryWindowInDays: aws.Int64(7)}); err != nil {
		l.t.Fatalf("LiteLLM DeleteSecret: %v", err)
	}
}

func TestLiteLLMCompatibility(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	ll := litellm{c: f.Client(), t: t}
	// LiteLLM's naming: prefix_for_stored_virtual_keys + key alias.
	naming := settings.Resolved{Prefix: "litellm-" + uuid.NewString()[:8] + "/", NameTemplate: "{prefix}{alias}"}
	name := func(alias string) string {
		n, err := naming.SecretName("team-1", "key-1", alias)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("LiteLLMWritesKeyrelayReads", func(t *testing.T) {
		n := name("gateway-key")
		ll.write(n, "sk-litellm-abc", "litellm virtual key", map[string]string{"Environment": "Prod"})
		s, err := p.Get(ctxT(t), n, "")
		if err != nil || string(s.Value) != "sk-litellm-abc" {
			t.Fatalf("keyrelay Get of a LiteLLM secret: %v %v", s, err)
		}
		ll.rotate(n, "sk-litellm-def")
		if s, _ := p.Get(ctxT(t), n, ""); string(s.Value) != "sk-litellm-def" {
			t.Errorf("after LiteLLM's rotation keyrelay reads %q", s.Value)
		}
		// Not tagged as keyrelay's: not overwritten unless adopted.
		_, err = p.Put(ctxT(t), providers.PutRequest{Name: n, Value: []byte("sk-new"), IdempotencyKey: "e1", Owner: owner})
		if !errors.Is(err, providers.ErrNotOwned) {
			t.Errorf("Put over LiteLLM's secret without Adopt: %v", err)
		}
		if _, err := p.Put(ctxT(t), providers.PutRequest{Name: n, Value: []byte("sk-adopted"), IdempotencyKey: "e1", Owner: owner, Adopt: true}); err != nil {
			t.Fatal(err)
		}
		if got := ll.read(n); got != "sk-adopted" {
			t.Errorf("LiteLLM reads %q after adoption", got)
		}
		// LiteLLM's own tags survive an adopting Put that brings none.
		d, _ := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(n)})
		tags := map[string]string{}
		for _, tg := range d.Tags {
			tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		if tags["Environment"] != "Prod" || tags["managed-by"] != "keyrelay" {
			t.Errorf("tags after adoption %v", tags)
		}
	})

	t.Run("KeyrelayWritesLiteLLMReads", func(t *testing.T) {
		n := name("relay-key")
		for i, v := range []string{"sk-relay-1", "sk-relay-2 with spaces & {json-ish}"} {
			if _, err := p.Put(ctxT(t), providers.PutRequest{Name: n, Value: []byte(v), IdempotencyKey: "evt-" + string(rune('a'+i)),
				Owner: owner, Description: "litellm virtual key"}); err != nil {
				t.Fatal(err)
			}
			if got := ll.read(n); got != v {
				t.Errorf("LiteLLM reads %q, want the raw value %q", got, v)
			}
		}
	})

	t.Run("LiteLLMDeletedKeyrelayRestores", func(t *testing.T) {
		n := name("deleted-by-litellm")
		ll.write(n, "sk-old", "", map[string]string{"managed-by": "keyrelay", "keyrelay-team": "team-1", "keyrelay-key": "key-1"})
		ll.delete(n)
		r, err := p.Put(ctxT(t), providers.PutRequest{Name: n, Value: []byte("sk-back"), IdempotencyKey: "e-back", Owner: owner})
		if err != nil || !r.Created {
			t.Fatalf("Put on a name LiteLLM scheduled for deletion: %+v %v", r, err)
		}
		if got := ll.read(n); got != "sk-back" {
			t.Errorf("LiteLLM reads %q", got)
		}
	})

	t.Run("PrimarySecret", func(t *testing.T) {
		n := name("primary")
		body, _ := json.Marshal(map[string]any{"OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-ant", "MAX": 3})
		ll.write(n, string(body), "", nil)
		for key, want := range map[string]string{"OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-ant", "MAX": "3"} {
			got, err := secretsmanager.ReadPrimarySecret(ctxT(t), p, n, key)
			if err != nil || got != want {
				t.Errorf("ReadPrimarySecret %s = %q, %v; want %q", key, got, err, want)
			}
		}
		_, err := secretsmanager.ReadPrimarySecret(ctxT(t), p, n, "MISSING")
		if !errors.Is(err, providers.ErrNotFound) || providers.IsRetryable(err) {
			t.Errorf("missing member: %v", err)
		}
		_, err = secretsmanager.ReadPrimarySecret(ctxT(t), p, name("no-such-primary"), "X")
		if !errors.Is(err, providers.ErrNotFound) {
			t.Errorf("missing primary secret: %v", err)
		}
		plain := name("not-json")
		ll.write(plain, "sk-NOTJSON-secret", "", nil)
		_, err = secretsmanager.ReadPrimarySecret(ctxT(t), p, plain, "X")
		if !errors.Is(err, providers.ErrInvalid) || strings.Contains(err.Error(), "NOTJSON") {
			t.Errorf("non-JSON primary secret: %v", err)
		}
	})
}

func TestParsePrimarySecret(t *testing.T) {
	tests := map[string]struct {
		in   string
		want map[string]string
		err  bool
	}{
		"strings":  {`{"A":"a","B":"b"}`, map[string]string{"A": "a", "B": "b"}, false},
		"mixed":    {`{"n":1.5,"b":true,"o":{"x":1},"s":"x\"y"}`, map[string]string{"n": "1.5", "b": "true", "o": `{"x":1}`, "s": `x"y`}, false},
		"empty":    {`{}`, map[string]string{}, false},
		"array":    {`["a"]`, nil, true},
		"null":     {`null`, nil, true},
		"not json": {`sk-123`, nil, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := secretsmanager.ParsePrimarySecret([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, providers.ErrInvalid) || strings.Contains(err.Error(), tc.in) {
					t.Errorf("error %v", err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v %v", got, err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}
