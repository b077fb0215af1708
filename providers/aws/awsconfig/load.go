package awsconfig

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Load builds an aws.Config from a provider options map and the
// environment (getenv nil means os.Getenv): FromOptions, then
// Settings.Load. It makes no network call.
func Load(ctx context.Context, opts map[string]string, getenv func(string) string) (aws.Config, error) {
	s, err := FromOptions(opts, getenv)
	if err != nil {
		return aws.Config{}, err
	}
	return s.Load(ctx)
}

// Load builds an aws.Config from s (see the package documentation for the
// credential precedence). extra options are applied last, after keyrelay's
// own (an HTTP client, a logger, ...). The config's retryer makes
// s.MaxAttempts attempts with the SDK's standard backoff, honours the
// service's x-amz-retry-after hints, and has no client-side retry quota
// (keyrelay retries events itself and rate-limits its own calls). Endpoint
// becomes cfg.BaseEndpoint, for the service clients built from cfg; STS
// clients made here use STSEndpoint instead. Load makes no network call.
func (s Settings) Load(ctx context.Context, extra ...func(*config.LoadOptions) error) (aws.Config, error) {
	if err := s.Validate(); err != nil {
		return aws.Config{}, err
	}
	var lo []func(*config.LoadOptions) error
	if s.Region != "" {
		lo = append(lo, config.WithRegion(s.Region))
	} else {
		lo = append(lo, config.WithDefaultRegion(DefaultRegion))
	}
	if s.CABundle != "" {
		pem, err := os.ReadFile(s.CABundle)
		if err != nil {
			return aws.Config{}, fmt.Errorf("awsconfig: Settings.CABundle (option %q): %w", OptionCABundle, err)
		}
		lo = append(lo, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	attempts := s.MaxAttempts
	if attempts == 0 {
		attempts = DefaultMaxAttempts
	}
	lo = append(lo, config.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.RateLimiter = ratelimit.None
		})
	}))
	switch {
	case s.Profile != "":
		lo = append(lo, config.WithSharedConfigProfile(s.Profile))
	case s.AccessKeyID != "":
		lo = append(lo, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(s.AccessKeyID, s.SecretAccessKey, s.SessionToken)))
	}
	lo = append(lo, extra...)
	cfg, err := config.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		// The SDK's messages name files and profiles, never credentials.
		return aws.Config{}, fmt.Errorf("awsconfig: %w", err)
	}
	if s.RoleARN != "" && !s.usesIRSARole() {
		cfg.Credentials = s.roleCredentials(cfg)
	}
	if s.Endpoint != "" {
		cfg.BaseEndpoint = aws.String(s.Endpoint)
	}
	return cfg, nil
}

// roleCredentials returns the cached provider assuming RoleARN, signed
// (for AssumeRole) with base's credentials.
func (s Settings) roleCredentials(base aws.Config) aws.CredentialsProvider {
	client := sts.NewFromConfig(base.Copy(), func(o *sts.Options) {
		if s.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(s.STSEndpoint)
			if r := stsRegion(s.STSEndpoint); r != "" {
				o.Region = r
			}
		}
	})
	var p aws.CredentialsProvider
	if s.WebIdentityToken != "" {
		var tok stscreds.IdentityTokenRetriever = staticToken(s.WebIdentityToken)
		if s.WebIdentityToken[0] == '/' {
			tok = stscreds.IdentityTokenFile(s.WebIdentityToken)
		}
		p = stscreds.NewWebIdentityRoleProvider(client, s.RoleARN, tok, func(o *stscreds.WebIdentityRoleOptions) {
			o.RoleSessionName = s.sessionName()
		})
	} else {
		p = stscreds.NewAssumeRoleProvider(client, s.RoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = s.sessionName()
			if s.ExternalID != "" {
				o.ExternalID = aws.String(s.ExternalID)
			}
		})
	}
	return aws.NewCredentialsCache(p, func(o *aws.CredentialsCacheOptions) {
		// Refresh a little before expiry, spread out between processes.
		o.ExpiryWindow = 2 * time.Minute
		o.ExpiryWindowJitterFrac = 0.5
	})
}

// staticToken is a web identity token given as a value.
type staticToken string

func (t staticToken) GetIdentityToken() ([]byte, error) { return []byte(t), nil }

// String hides the token.
func (t staticToken) String() string { return "REDACTED" }

var stsHostRE = regexp.MustCompile(`(?:^|\.)sts(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|vpce\.amazonaws\.com)$`)

// stsRegion extracts the signing region from a regional STS host name
// (sts.eu-west-1.amazonaws.com, vpce-x.sts.eu-west-1.vpce.amazonaws.com),
// as LiteLLM does; "" for any other host.
func stsRegion(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	if m := stsHostRE.FindStringSubmatch(u.Hostname()); m != nil {
		return m[1]
	}
	return ""
}
