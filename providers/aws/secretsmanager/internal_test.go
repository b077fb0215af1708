package secretsmanager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keyrelay/keyrelay/providers"
)

func opErr(err error) error {
	return &smithy.OperationError{ServiceID: "Secrets Manager", OperationName: "PutSecretValue", Err: err}
}

func TestClassifyTransport(t *testing.T) {
	tests := map[string]struct {
		err      error
		kind     providers.Kind
		sentinel error
		msg      string
	}{
		"canceled": {opErr(fmt.Errorf("canceled: %w", context.Canceled)), providers.Retryable, context.Canceled, "canceled"},
		"deadline": {opErr(fmt.Errorf("request send failed: %w", context.DeadlineExceeded)), providers.Retryable, context.DeadlineExceeded, "timed out"},
		"refused": {opErr(&url.Error{Op: "Post", URL: "https://x", Err: &net.OpError{Op: "dial", Net: "tcp",
			Err: errors.New("connect: connection refused")}}), providers.Retryable, providers.ErrUnavailable, "network: dial tcp: connect: connection refused"},
		"eof":           {opErr(fmt.Errorf("send: %w", io.EOF)), providers.Retryable, providers.ErrUnavailable, "network: connection closed by the server"},
		"reset":         {opErr(errors.New("read: connection reset by peer")), providers.Retryable, providers.ErrUnavailable, "network: connection reset"},
		"tls":           {opErr(&url.Error{Op: "Post", URL: "https://x", Err: x509.UnknownAuthorityError{}}), providers.Permanent, providers.ErrInvalid, "TLS"},
		"params":        {opErr(smithy.InvalidParamsError{Context: "PutSecretValueInput"}), providers.Permanent, providers.ErrInvalid, "parameter validation"},
		"no creds":      {opErr(errors.New("get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found")), providers.Permanent, providers.ErrAccessDenied, "credentials could not be obtained"},
		"creds network": {opErr(fmt.Errorf("get identity: get credentials: %w", &net.OpError{Op: "dial", Err: errors.New("i/o timeout")})), providers.Retryable, providers.ErrUnavailable, "network"},
		"creds api error": {opErr(fmt.Errorf("get identity: get credentials: %w", &smithy.GenericAPIError{Code: "AccessDenied",
			Message: "not authorized to perform sts:AssumeRole"})), providers.Permanent, providers.ErrAccessDenied, "credentials: not authorized"},
		"garbage": {opErr(errors.New("deserialization failed, failed to decode response body")), providers.Retryable, providers.ErrUnavailable, "unexpected failure"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pe := classify("put", "n", "PutSecretValue", tc.err, nil)
			if pe.Kind != tc.kind || !errors.Is(pe, tc.sentinel) {
				t.Errorf("classify = %v (kind %v), want kind %v matching %v", pe, pe.Kind, tc.kind, tc.sentinel)
			}
			if !strings.Contains(pe.Error(), tc.msg) {
				t.Errorf("message %q lacks %q", pe.Error(), tc.msg)
			}
			if strings.Contains(pe.Error(), "operation error") {
				t.Errorf("message %q keeps the SDK's wrapping", pe.Error())
			}
		})
	}
}

func TestRetryHint(t *testing.T) {
	resp := func(h http.Header) *smithyhttp.ResponseError {
		return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 400, Header: h}}}
	}
	future := time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)
	tests := map[string]struct {
		re       *smithyhttp.ResponseError
		min, max time.Duration
	}{
		"none":           {resp(http.Header{}), DefaultThrottleRetryAfter, DefaultThrottleRetryAfter},
		"no response":    {nil, DefaultThrottleRetryAfter, DefaultThrottleRetryAfter},
		"amz ms":         {resp(http.Header{"X-Amz-Retry-After": {"250"}}), 250 * time.Millisecond, 250 * time.Millisecond},
		"amz bad":        {resp(http.Header{"X-Amz-Retry-After": {"soon"}}), DefaultThrottleRetryAfter, DefaultThrottleRetryAfter},
		"seconds":        {resp(http.Header{"Retry-After": {"2"}}), 2 * time.Second, 2 * time.Second},
		"date":           {resp(http.Header{"Retry-After": {future}}), 8 * time.Second, 10 * time.Second},
		"amz wins":       {resp(http.Header{"X-Amz-Retry-After": {"100"}, "Retry-After": {"9"}}), 100 * time.Millisecond, 100 * time.Millisecond},
		"capped":         {resp(http.Header{"Retry-After": {"86400"}}), MaxRetryAfter, MaxRetryAfter},
		"past is now":    {resp(http.Header{"Retry-After": {"Mon, 02 Jan 2006 15:04:05 GMT"}}), 0, 0},
		"negative amz":   {resp(http.Header{"X-Amz-Retry-After": {"-5"}}), DefaultThrottleRetryAfter, DefaultThrottleRetryAfter},
		"zero is a hint": {resp(http.Header{"X-Amz-Retry-After": {"0"}}), 0, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := retryHint(tc.re); got < tc.min || got > tc.max {
				t.Errorf("retryHint = %v, want [%v, %v]", got, tc.min, tc.max)
			}
		})
	}
}

func TestSanitizeMessage(t *testing.T) {
	value := []byte("sk-live-1234")
	tests := map[string]struct{ in, want string }{
		"plain":       {"Secrets Manager can't find the specified secret.", "Secrets Manager can't find the specified secret."},
		"quoted":      {`Value 'abc' at "x" failed`, `Value '<redacted>' at '<redacted>' failed`},
		"backquoted":  {"bad `thing`", "bad '<redacted>'"},
		"value":       {"got sk-live-1234 here", "(message withheld: it quoted the request)"},
		"value b64":   {"got c2stbGl2ZS0xMjM0 here", "(message withheld: it quoted the request)"},
		"key id":      {"key ASIAABCDEFGHIJKLMNOP expired", "key <access-key-id> expired"},
		"controls":    {"a\nb\tc", "a b c"},
		"long":        {strings.Repeat("x", 300), strings.Repeat("x", 200) + "..."},
		"apostrophes": {"can't find the secret you're after", "can't find the secret you're after"},
		"after colon": {"bad value:'x' (\"y\")", "bad value:'<redacted>' ('<redacted>')"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := sanitizeMessage(tc.in, value); got != tc.want {
				t.Errorf("sanitizeMessage(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSecretID(t *testing.T) {
	long := strings.Repeat("a", 600)
	tests := map[string]struct {
		name string
		same bool // used unchanged
	}{
		"litellm default":  {"litellm/my-alias", true},
		"keyrelay default": {"litellm/team-1/key_1", true},
		"all allowed":      {"a/B_c+d=e.f@g-h", true},
		"512":              {strings.Repeat("b", 512), true},
		"513":              {strings.Repeat("b", 513), false},
		"space":            {"team a/key", false},
		"unicode":          {"clé/鍵", false},
		"colon":            {"team:1/key", false},
		"long":             {long, false},
	}
	seen := map[string]string{}
	for label, tc := range tests {
		t.Run(label, func(t *testing.T) {
			id := SecretID(tc.name)
			if (id == tc.name) != tc.same {
				t.Errorf("SecretID(%q) = %q, unchanged %v, want %v", clip(tc.name, 20), clip(id, 40), id == tc.name, tc.same)
			}
			if !awsNameOK(id) {
				t.Errorf("SecretID(%q) = %q is not a valid AWS name", clip(tc.name, 20), id)
			}
			if SecretID(tc.name) != id {
				t.Error("not deterministic")
			}
			if other, dup := seen[id]; dup {
				t.Errorf("%q and %q map to the same name", label, other)
			}
			seen[id] = label
		})
	}
	// Mapped names keep what they can and differ by their hash.
	if a, b := SecretID("x y/1"), SecretID("x_y/1"); a == b || !strings.HasPrefix(a, "x_y/1@") || b != "x_y/1" {
		t.Errorf("SecretID(x y/1) = %q, SecretID(x_y/1) = %q", a, b)
	}
	if a, b := SecretID(long+"1"), SecretID(long+"2"); a == b || len(a) != MaxAWSNameLength {
		t.Errorf("long names: %q vs %q (len %d)", a, b, len(a))
	}
}

func TestClientRequestToken(t *testing.T) {
	a, b := ClientRequestToken("evt-1"), ClientRequestToken("evt-2")
	if a == b || a != ClientRequestToken("evt-1") || len(a) != 36 || ClientRequestToken("") != "" {
		t.Errorf("tokens %q %q", a, b)
	}
	// The namespace is fixed: this value must never change, or versions
	// written before an upgrade would not be recognized as duplicates.
	if a != "d1453e40-1ba0-54b1-8226-b1b17120c278" {
		t.Errorf("ClientRequestToken(evt-1) = %s: the token derivation changed", a)
	}
}

func TestTags(t *testing.T) {
	owned := map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t1", "keyrelay-key": "k1", "env": "dev", "aws:cloudformation:stack-name": "s"}
	tests := map[string]struct {
		old       map[string]string
		owner     providers.Owner
		extra     map[string]string
		keepExtra bool
		adopt     bool
		want      map[string]string
	}{
		"replace extra": {owned, providers.Owner{TeamID: "t1", KeyID: "k1"}, map[string]string{"env": "prod"}, false, false,
			map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t1", "keyrelay-key": "k1", "env": "prod"}},
		"keep extra": {owned, providers.Owner{TeamID: "t1", KeyID: "k1"}, nil, true, false,
			map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t1", "keyrelay-key": "k1", "env": "dev"}},
		"empty owner keeps recorded owner": {owned, providers.Owner{}, nil, false, false,
			map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t1", "keyrelay-key": "k1"}},
		"adopt moves ownership": {owned, providers.Owner{TeamID: "t2", KeyID: "k2"}, nil, false, true,
			map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t2", "keyrelay-key": "k2"}},
		"unmanaged adopted": {map[string]string{"Owner": "someone"}, providers.Owner{TeamID: "t2", KeyID: "k2"}, map[string]string{"a": "b"}, false, true,
			map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t2", "keyrelay-key": "k2", "a": "b"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := desiredTags(tc.old, tc.owner, tc.extra, tc.keepExtra, tc.adopt)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("desiredTags = %v, want %v", got, tc.want)
			}
		})
	}
	set, remove := tagDiff(owned, map[string]string{"managed-by": "keyrelay", "keyrelay-team": "t1", "keyrelay-key": "k2", "new": "1"})
	if !reflect.DeepEqual(set, map[string]string{"keyrelay-key": "k2", "new": "1"}) || !reflect.DeepEqual(remove, []string{"env"}) {
		t.Errorf("tagDiff: set %v remove %v (aws: tags must stay)", set, remove)
	}
	ex := extraTags(map[string]string{"managed-by": "intruder", "keyrelay-team": "x", "ok": "v", "sp ace": "vé", "a!": "b?", "AWS:x": "y",
		strings.Repeat("k", 200): strings.Repeat("v", 300)})
	want := map[string]string{"ok": "v", "sp ace": "vé", "a_": "b_", "x-AWS:x": "y", strings.Repeat("k", 128): strings.Repeat("v", 256)}
	if !reflect.DeepEqual(ex, want) {
		t.Errorf("extraTags = %v", ex)
	}
	if extraTags(nil) != nil {
		t.Error("extraTags(nil) must stay nil (keep the secret's tags)")
	}
}

// Signature errors about the signing time are clock skew (retryable);
// other signature errors stay permanent access denials.
func TestClassifyClockSkew(t *testing.T) {
	api := func(code, msg string) error { return opErr(&smithy.GenericAPIError{Code: code, Message: msg}) }
	tests := map[string]struct {
		err  error
		skew bool
	}{
		"expired":           {api("InvalidSignatureException", "Signature expired: 20261207T060000Z is now earlier than 20261207T064500Z (20261207T070000Z - 15 min.)"), true},
		"not yet current":   {api("InvalidSignatureException", "Signature not yet current: 20261207T080000Z is still later than 20261207T071500Z (20261207T070000Z + 15 min.)"), true},
		"too skewed":        {api("RequestTimeTooSkewed", "The difference between the request time and the current time is too large."), true},
		"judged by the SDK": {opErr(fmt.Errorf("Probable clock skew error: %w", &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "denied"})), true},
		"wrong secret key":  {api("InvalidSignatureException", "The request signature we calculated does not match the signature you provided."), false},
		"access denied":     {api("AccessDeniedException", "User is not authorized to perform secretsmanager:PutSecretValue"), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pe := classify("put", "n", "PutSecretValue", tc.err, nil)
			if !errors.Is(pe, providers.ErrAccessDenied) || errors.Is(pe, ErrClockSkew) != tc.skew || providers.IsRetryable(pe) != tc.skew {
				t.Errorf("classify = %v (kind %v), clock skew %v, want clock skew (and retryable) %v", pe, pe.Kind, errors.Is(pe, ErrClockSkew), tc.skew)
			}
		})
	}
}
