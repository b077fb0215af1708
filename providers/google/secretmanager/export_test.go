package secretmanager

import (
	"time"

	"cloud.google.com/go/auth"
)

// SetQuotaWindow makes the per-minute limits of c (ProjectWritesPerMinute,
// ReadsPerMinute, AccessPerMinute) hold in windows of d instead, so that
// a test can match a fake's shortened quota windows.
func SetQuotaWindow(c *Config, d time.Duration) { c.quotaWindow = d }

// SetCredentials makes calls through a provider built from c carry the
// tokens of the credentials creds returns (each call a new token cache),
// instead of CredentialsFile's or Application Default Credentials'.
func SetCredentials(c *Config, creds func() *auth.Credentials) {
	c.credentials = func() (*auth.Credentials, error) { return creds(), nil }
}
