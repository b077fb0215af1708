// Package natsconn connects keyrelay to NATS: an external server or
// cluster with credentials, nkey, token or user/password and TLS, or the
// embedded in-process JetStream server used by default. The embedded
// server requires a token from every client (see StartEmbedded), and
// Redact keeps credentials in URLs out of logs and errors.
package natsconn

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/settings"
)

// Options builds nats.Options from the configuration.
func Options(c settings.NATSConfig, name string) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey_file: %w", err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, errors.New("nats: cert_file and key_file must be set together")
		}
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return opts, nil
}

// Connect dials url with the configured options. url may list several
// servers separated by commas (a cluster's seeds): nats.go tries each
// until one answers, and reconnects to any server of the cluster after.
func Connect(url string, c settings.NATSConfig, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := Options(c, name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", Redact(url), err)
	}
	return nc, nil
}

// Redact returns a comma-separated URL list with any user information
// (user:password@ or token@) replaced by "redacted", for logs and errors.
// It does not parse the entries as URLs, so no form gets through
// unredacted: with or without a scheme ("alice:pw@host:4222"), or with
// characters a URL parser rejects. Everything before an entry's last "@"
// (after its scheme) is user information. An entry whose user information
// has no scheme before it may be the end of a password holding a comma
// (nats.go splits URLs on commas): it is redacted together with the
// entries before it that have no "@" of their own, which can hide a host
// name too; Redact errs on the side of hiding.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	var out []string
	for i := len(parts) - 1; i >= 0; i-- {
		p := parts[i]
		for i > 0 && userInfoWithoutScheme(p) && !strings.Contains(parts[i-1], "@") {
			i--
			p = parts[i] + "," + p
		}
		out = append(out, redactEntry(p))
	}
	slices.Reverse(out)
	return strings.Join(out, ",")
}

// redactEntry replaces what comes before the last "@" of one URL, after
// its scheme.
func redactEntry(u string) string {
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return u
	}
	return schemePrefix(u[:at]) + "redacted" + u[at:]
}

// userInfoWithoutScheme reports whether u has an "@" with no scheme
// before it.
func userInfoWithoutScheme(u string) bool {
	at := strings.LastIndex(u, "@")
	return at >= 0 && schemePrefix(u[:at]) == ""
}

// schemePrefix returns "scheme://" when s starts with one (RFC 3986: a
// letter, then letters, digits, "+", "-" or "."), else "".
func schemePrefix(s string) string {
	i := strings.Index(s, "://")
	if i <= 0 {
		return ""
	}
	for j, r := range s[:i] {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (j == 0 || !(r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return ""
		}
	}
	return s[:i+3]
}
