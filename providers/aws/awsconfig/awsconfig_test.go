package awsconfig_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/sivchari/kumo"

	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"
)

// hermetic keeps the SDK away from the machine's own AWS configuration.
func hermetic(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
		"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL",
		"AWS_ENDPOINT_URL_STS", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromOptions(t *testing.T) {
	tests := map[string]struct {
		opts map[string]string
		env  map[string]string
		want awsconfig.Settings
	}{
		"empty": {},
		"litellm names": {
			opts: map[string]string{"aws_region_name": "eu-west-1", "aws_role_name": "arn:aws:iam::111122223333:role/r",
				"aws_session_name": "sess", "aws_external_id": "ext-1", "aws_profile_name": "p",
				"aws_web_identity_token": "tok", "aws_sts_endpoint": "https://sts.eu-west-1.amazonaws.com"},
			want: awsconfig.Settings{Region: "eu-west-1", RoleARN: "arn:aws:iam::111122223333:role/r", SessionName: "sess",
				ExternalID: "ext-1", Profile: "p", WebIdentityToken: "tok", STSEndpoint: "https://sts.eu-west-1.amazonaws.com"},
		},
		"env fallbacks": {
			env: map[string]string{"AWS_REGION_NAME": "ap-south-1", "AWS_ROLE_NAME": "arn:aws:iam::1:role/x", "AWS_SESSION_NAME": "s2",
				"AWS_EXTERNAL_ID": "e2", "AWS_PROFILE_NAME": "p2", "AWS_WEB_IDENTITY_TOKEN": "t2", "AWS_STS_ENDPOINT": "http://127.0.0.1:1",
				"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_SESSION_TOKEN": "TOKEN", "AWS_CA_BUNDLE": "/ca.pem"},
			want: awsconfig.Settings{Region: "ap-south-1", RoleARN: "arn:aws:iam::1:role/x", SessionName: "s2", ExternalID: "e2",
				Profile: "p2", WebIdentityToken: "t2", STSEndpoint: "http://127.0.0.1:1", AccessKeyID: "AKID", SecretAccessKey: "SECRET",
				SessionToken: "TOKEN", CABundle: "/ca.pem"},
		},
		"options win over env": {
			opts: map[string]string{"aws_region_name": "eu-west-1", "aws_profile_name": "opt"},
			env:  map[string]string{"AWS_REGION_NAME": "us-east-2", "AWS_PROFILE_NAME": "env"},
			want: awsconfig.Settings{Region: "eu-west-1", Profile: "opt"},
		},
		"region order": {
			env:  map[string]string{"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "us-east-1"},
			want: awsconfig.Settings{Region: "us-east-2"},
		},
		"AWS_REGION_NAME before AWS_REGION": {
			env:  map[string]string{"AWS_REGION_NAME": "eu-north-1", "AWS_REGION": "us-east-2"},
			want: awsconfig.Settings{Region: "eu-north-1"},
		},
		"region option wins over aws_region_name": {
			opts: map[string]string{"region": "eu-central-1", "aws_region_name": "us-east-1"},
			want: awsconfig.Settings{Region: "eu-central-1"},
		},
		"keyrelay options": {
			opts: map[string]string{"endpoint": "http://127.0.0.1:4566", "ca_bundle": "/etc/ca.pem", "max_attempts": "5"},
			env:  map[string]string{"AWS_CA_BUNDLE": "/other.pem"},
			want: awsconfig.Settings{Endpoint: "http://127.0.0.1:4566", CABundle: "/etc/ca.pem", MaxAttempts: 5},
		},
		"blank values ignored": {
			opts: map[string]string{"aws_region_name": "  "},
			env:  map[string]string{"AWS_REGION": "us-east-1"},
			want: awsconfig.Settings{Region: "us-east-1"},
		},
		"unknown keys ignored": {
			opts: map[string]string{"mount": "secret", "recovery_window_days": "7"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := awsconfig.FromOptions(tc.opts, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			// Compare through the exported fields only.
			if fmt.Sprintf("%#v", exported(got)) != fmt.Sprintf("%#v", exported(tc.want)) {
				t.Errorf("got  %#v\nwant %#v", exported(got), exported(tc.want))
			}
		})
	}
}

type plain struct {
	Region, Endpoint, CABundle                             string
	MaxAttempts                                            int
	AccessKeyID, SecretAccessKey, SessionToken             string
	Profile, RoleARN, SessionName, ExternalID, WebIdentity string
	STSEndpoint                                            string
}

func exported(s awsconfig.Settings) plain {
	return plain{s.Region, s.Endpoint, s.CABundle, s.MaxAttempts, s.AccessKeyID, s.SecretAccessKey, s.SessionToken,
		s.Profile, s.RoleARN, s.SessionName, s.ExternalID, s.WebIdentityToken, s.STSEndpoint}
}

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		opts map[string]string
		// want is a substring of the error; the option value must not be in it.
		want string
	}{
		"region":               {map[string]string{"aws_region_name": "US_EAST-1"}, `Settings.Region (option "aws_region_name")`},
		"endpoint scheme":      {map[string]string{"endpoint": "ftp://x"}, `Settings.Endpoint (option "endpoint")`},
		"endpoint relative":    {map[string]string{"endpoint": "localhost:4566"}, `Settings.Endpoint`},
		"endpoint userinfo":    {map[string]string{"endpoint": "https://user:pw-SECRET@h"}, `must not carry user information`},
		"sts endpoint":         {map[string]string{"aws_role_name": "arn:aws:iam::1:role/r", "aws_sts_endpoint": "sts"}, `Settings.STSEndpoint`},
		"max attempts nan":     {map[string]string{"max_attempts": "three"}, `option "max_attempts"`},
		"max attempts range":   {map[string]string{"max_attempts": "11"}, `Settings.MaxAttempts`},
		"half static keys":     {map[string]string{"aws_access_key_id": "AKID-SECRET"}, `Settings.AccessKeyID`},
		"token without keys":   {map[string]string{"aws_session_token": "TOKEN-SECRET"}, `Settings.SessionToken`},
		"role not an arn":      {map[string]string{"aws_role_name": "my-role"}, `Settings.RoleARN (option "aws_role_name") must be a role ARN`},
		"session name":         {map[string]string{"aws_role_name": "arn:aws:iam::1:role/r", "aws_session_name": "a b"}, `Settings.SessionName`},
		"external id":          {map[string]string{"aws_role_name": "arn:aws:iam::1:role/r", "aws_external_id": "x"}, `Settings.ExternalID`},
		"external id too long": {map[string]string{"aws_external_id": strings.Repeat("SECRET", 300)}, `Settings.ExternalID`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := awsconfig.FromOptions(tc.opts, env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q contains the option's value", err)
			}
		})
	}
}

func TestStringRedacts(t *testing.T) {
	s, err := awsconfig.FromOptions(map[string]string{"aws_access_key_id": "AKIA-SECRET-1", "aws_secret_access_key": "SECRET-2",
		"aws_session_token": "SECRET-3", "aws_role_name": "arn:aws:iam::1:role/r", "aws_web_identity_token": "SECRET-4",
		"aws_external_id": "SECRET-5"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{s.String(), fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s)} {
		if strings.Contains(out, "SECRET") {
			t.Errorf("credentials not redacted: %s", out)
		}
		if !strings.Contains(out, "arn:aws:iam::1:role/r") {
			t.Errorf("non-secret field missing: %s", out)
		}
	}
}

func TestLoadStatic(t *testing.T) {
	hermetic(t)
	ctx := context.Background()
	cfg, err := awsconfig.Load(ctx, map[string]string{"aws_region_name": "eu-west-3", "endpoint": "http://127.0.0.1:1"},
		env(map[string]string{"AWS_ACCESS_KEY_ID": "AKIDSTATIC", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "tok"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != "eu-west-3" {
		t.Errorf("Region = %q", cfg.Region)
	}
	if cfg.BaseEndpoint == nil || *cfg.BaseEndpoint != "http://127.0.0.1:1" {
		t.Errorf("BaseEndpoint = %v", cfg.BaseEndpoint)
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessKeyID != "AKIDSTATIC" || c.SessionToken != "tok" {
		t.Errorf("credentials %q/%q", c.AccessKeyID, c.SessionToken)
	}
	if got := cfg.Retryer().MaxAttempts(); got != awsconfig.DefaultMaxAttempts {
		t.Errorf("MaxAttempts = %d, want %d", got, awsconfig.DefaultMaxAttempts)
	}
}

func TestLoadDefaultRegion(t *testing.T) {
	hermetic(t)
	cfg, err := awsconfig.Load(context.Background(), nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != awsconfig.DefaultRegion {
		t.Errorf("Region = %q, want %q", cfg.Region, awsconfig.DefaultRegion)
	}
	if cfg.BaseEndpoint != nil {
		t.Errorf("BaseEndpoint = %q without an endpoint option", *cfg.BaseEndpoint)
	}
}

func TestLoadProfile(t *testing.T) {
	hermetic(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "config")
	if err := os.WriteFile(conf, []byte("[profile team-a]\nregion = ca-central-1\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", conf)
	ctx := context.Background()
	// Environment keys lose to an explicit profile, as in LiteLLM.
	cfg, err := awsconfig.Load(ctx, map[string]string{"aws_profile_name": "team-a"},
		env(map[string]string{"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != "ca-central-1" {
		t.Errorf("Region = %q, want the profile's", cfg.Region)
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessKeyID != "AKIDPROFILE" {
		t.Errorf("AccessKeyID = %q, want the profile's", c.AccessKeyID)
	}
	if _, err := awsconfig.Load(ctx, map[string]string{"aws_profile_name": "missing"}, env(nil)); err == nil {
		t.Error("Load with a missing profile: no error")
	}
}

// stsRecorder forwards to kumo's STS and records the form of each call.
type stsRecorder struct {
	mu    sync.Mutex
	calls []url.Values
	auth  []string
	proxy http.Handler
}

func newSTSRecorder(t *testing.T) (*stsRecorder, *kumo.Server) {
	k := kumo.NewServer()
	t.Cleanup(k.Close)
	u, _ := url.Parse(k.URL)
	return &stsRecorder{proxy: httputil.NewSingleHostReverseProxy(u)}, k
}

func (r *stsRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	form, _ := url.ParseQuery(string(body))
	r.mu.Lock()
	r.calls = append(r.calls, form)
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.mu.Unlock()
	req.Body = io.NopCloser(bytes.NewReader(body))
	r.proxy.ServeHTTP(w, req)
}

func (r *stsRecorder) snapshot() ([]url.Values, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]url.Values(nil), r.calls...), append([]string(nil), r.auth...)
}

func TestLoadAssumeRole(t *testing.T) {
	hermetic(t)
	rec, _ := newSTSRecorder(t)
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	cfg, err := awsconfig.Load(ctx, map[string]string{
		"aws_region_name": "us-east-1", "aws_role_name": "arn:aws:iam::111122223333:role/keyrelay",
		"aws_session_name": "relay-1", "aws_external_id": "ext-123", "aws_sts_endpoint": srv.URL,
		"endpoint": "http://127.0.0.1:9", // the service endpoint must not be used for STS
	}, env(map[string]string{"AWS_ACCESS_KEY_ID": "AKIDBASE", "AWS_SECRET_ACCESS_KEY": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || c.SessionToken == "" || !c.CanExpire {
		t.Errorf("assumed credentials look wrong: key %q, token set %v, expires %v", c.AccessKeyID, c.SessionToken != "", c.CanExpire)
	}
	// Cached: a second Retrieve makes no call.
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		t.Fatal(err)
	}
	calls, auth := rec.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d STS calls, want 1 (cached)", len(calls))
	}
	for k, want := range map[string]string{"Action": "AssumeRole", "RoleArn": "arn:aws:iam::111122223333:role/keyrelay",
		"RoleSessionName": "relay-1", "ExternalId": "ext-123"} {
		if got := calls[0].Get(k); got != want {
			t.Errorf("AssumeRole %s = %q, want %q", k, got, want)
		}
	}
	if !strings.Contains(auth[0], "Credential=AKIDBASE/") || !strings.Contains(auth[0], "/us-east-1/sts/") {
		t.Errorf("AssumeRole not signed with the base credentials in us-east-1: %q", auth[0])
	}
}

func TestLoadWebIdentity(t *testing.T) {
	hermetic(t)
	rec, _ := newSTSRecorder(t)
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	ctx := context.Background()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("jwt-from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct{ token, want string }{
		"value": {"jwt-literal", "jwt-literal"},
		"file":  {tokenFile, "jwt-from-file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := awsconfig.Load(ctx, map[string]string{"aws_region_name": "us-east-1",
				"aws_role_name": "arn:aws:iam::111122223333:role/oidc", "aws_web_identity_token": tc.token,
				"aws_sts_endpoint": srv.URL}, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			c, err := cfg.Credentials.Retrieve(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(c.AccessKeyID, "ASIA") {
				t.Errorf("AccessKeyID %q", c.AccessKeyID)
			}
			calls, _ := rec.snapshot()
			last := calls[len(calls)-1]
			if last.Get("Action") != "AssumeRoleWithWebIdentity" || last.Get("WebIdentityToken") != tc.want ||
				last.Get("RoleSessionName") != awsconfig.DefaultSessionName {
				t.Errorf("STS call %v", last)
			}
		})
	}
}

func TestLoadCABundle(t *testing.T) {
	hermetic(t)
	rec, _ := newSTSRecorder(t)
	srv := httptest.NewTLSServer(rec)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := map[string]string{"aws_region_name": "us-east-1", "aws_role_name": "arn:aws:iam::1:role/r", "aws_sts_endpoint": srv.URL}
	statics := env(map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"})

	// Without the bundle the test server's certificate is not trusted.
	cfg, err := awsconfig.Load(ctx, opts, statics)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without ca_bundle: %v, want a certificate error", err)
	}
	opts["ca_bundle"] = ca
	cfg, err = awsconfig.Load(ctx, opts, statics)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		t.Errorf("with ca_bundle: %v", err)
	}
	// The bundle applies to the service clients built from cfg as well.
	out, err := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(srv.URL) }).
		GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Errorf("GetCallerIdentity over TLS: %v", err)
	} else if out.Account == nil {
		t.Error("GetCallerIdentity: no account")
	}

	opts["ca_bundle"] = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := awsconfig.Load(ctx, opts, statics); err == nil || !strings.Contains(err.Error(), `option "ca_bundle"`) {
		t.Errorf("missing bundle: %v", err)
	}
}

func TestLoadMaxAttempts(t *testing.T) {
	hermetic(t)
	var n int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := awsconfig.Load(ctx, map[string]string{"aws_region_name": "us-east-1", "max_attempts": "2", "endpoint": srv.URL},
		env(map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	var me *retry.MaxAttemptsError
	if err == nil || !errorsAs(err, &me) {
		t.Fatalf("err = %v, want MaxAttemptsError", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
}
