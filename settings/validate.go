package settings

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/ownership"
)

// Validate checks every setting and returns all problems at once, joined;
// each is a *FieldError naming the setting by its full YAML path, e.g.
// "keyrelay.worker.claim_lease: must be shorter than keyrelay.worker.ack_wait".
// Use errors.As to get the first one.
func (c *Config) Validate() error { return c.validate(false) }

// validate is Validate; with fileOnly (Parse: the file alone, before the
// command line) the checks that hold only on the embedded server are left
// out when the file leaves keyrelay.nats.url empty, since --nats-url may
// still set it: the commands run Validate again after their flags.
func (c *Config) validate(fileOnly bool) error {
	v := validator{fileOnly: fileOnly}
	v.general(c)
	v.streams(&c.Keyrelay.Streams)
	v.worker(&c.Keyrelay.Worker)
	v.retention(&c.Keyrelay.Streams, &c.Keyrelay.Worker)
	v.migration(&c.Keyrelay.Migration)
	if m := c.Keyrelay.Quotas.Margin; m <= 0 || m > 1 {
		v.add("keyrelay.quotas.margin", "is %v; must be in (0, 1]", m)
	}
	if _, _, err := events.ParseRetireAfter(c.Keyrelay.Rotation.RetirePreviousAfter); err != nil {
		v.add("keyrelay.rotation.retire_previous_after", "%s", err.Error())
	}
	v.nats(&c.Keyrelay.NATS)
	v.misc(c)
	return errors.Join(v.errs...)
}

type validator struct {
	errs []error
	// fileOnly: see Config.validate.
	fileOnly bool
}

// embedded reports whether the checks that hold only on the embedded
// server apply to n.
func (v *validator) embedded(n *NATSConfig) bool { return n.IsEmbedded() && !v.fileOnly }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, fieldErr(path, 0, format, args...))
}

const (
	gs  = "general_settings."
	kms = "general_settings.key_management_settings."
	kr  = "keyrelay."
)

func (v *validator) general(c *Config) {
	if c.KeyManagementSystem == "" {
		v.add(gs+"key_management_system", "is required (a LiteLLM name such as hashicorp_vault, or %q)", DefaultKeyManagementSystem)
	} else if err := checkName(c.KeyManagementSystem); err != "" {
		v.add(gs+"key_management_system", "%s", err)
	}
	km := &c.KeyManagement
	switch km.AccessMode {
	case events.AccessReadOnly, events.AccessWriteOnly, events.AccessReadAndWrite:
	default:
		v.add(kms+"access_mode", "%q is not one of read_only, write_only, read_and_write", clip(km.AccessMode))
	}
	if err := checkPrefix(km.PrefixForStoredVirtualKeys); err != "" {
		v.add(kms+"prefix_for_stored_virtual_keys", "%s", err)
	}
	if err := checkText(km.Description); err != "" {
		v.add(kms+"description", "%s", err)
	}
	v.stringMap(kms+"tags", km.Tags)
}

func (v *validator) streams(s *StreamsConfig) {
	const p = kr + "streams."
	if s.Replicas < 1 || s.Replicas > MaxReplicas {
		v.add(p+"replicas", "is %d; must be 1 to %d (1 on one server, 3 in a cluster)", s.Replicas, MaxReplicas)
	}
	if s.DuplicateWindow <= 0 {
		v.add(p+"duplicate_window", "must be positive")
	}
	if s.EventsMaxAge < 0 {
		v.add(p+"events_max_age", "must not be negative (0 keeps events until events_max_bytes)")
	}
	if s.EventsMaxBytes == 0 || s.EventsMaxBytes < -1 {
		v.add(p+"events_max_bytes", "is %d; must be positive, or -1 for no limit", s.EventsMaxBytes)
	}
	if s.ConfirmationsMaxAge < 0 {
		v.add(p+"confirmations_max_age", "must not be negative (0 keeps confirmations)")
	}
	if s.DLQMaxAge < 0 {
		v.add(p+"dlq_max_age", "must not be negative (0 keeps dead letters)")
	}
	for _, l := range []struct {
		name string
		n    int64
	}{{"confirmations_max_bytes", s.ConfirmationsMaxBytes}, {"confirmations_max_msgs", s.ConfirmationsMaxMsgs},
		{"dlq_max_bytes", s.DLQMaxBytes}, {"dlq_max_msgs", s.DLQMaxMsgs}} {
		if l.n == 0 || l.n < -1 {
			v.add(p+l.name, "is %d; must be positive, or -1 for no limit", l.n)
		}
	}
	if s.EventsMaxAge > 0 && s.DuplicateWindow > s.EventsMaxAge {
		v.add(p+"duplicate_window", "must not be longer than %sevents_max_age", p)
	}
}

// retention checks the events' age limit against their retry budget: a
// lane stream removes events older than events_max_age whether or not they
// were handled, so an event still being retried in its consumer would be lost
// (a parked one outlives it: its parked message holds a copy).
func (v *validator) retention(s *StreamsConfig, w *WorkerConfig) {
	if s.EventsMaxAge > 0 && w.RetryFor > 0 && s.EventsMaxAge <= w.RetryFor {
		v.add(kr+"streams.events_max_age", "is %s; must be longer than %sworker.retry_for (%s), or 0: the lane streams remove events "+
			"older than events_max_age whether or not they were handled, so an event still being retried would be lost", s.EventsMaxAge, kr, w.RetryFor)
	}
}

func (v *validator) worker(w *WorkerConfig) {
	const p = kr + "worker."
	positiveInt := func(name string, n int) {
		if n <= 0 {
			v.add(p+name, "is %d; must be positive", n)
		}
	}
	positiveInt("concurrency", w.Concurrency)
	positiveInt("max_deliver", w.MaxDeliver)
	positiveInt("max_ack_pending", w.MaxAckPending)
	positiveInt("in_process_attempts", w.InProcessAttempts)
	if w.BackendSlots < 0 || (w.Concurrency > 0 && w.BackendSlots > w.Concurrency) {
		v.add(p+"backend_slots", "is %d; must be between 0 (half of concurrency) and concurrency (%d)", w.BackendSlots, w.Concurrency)
	}
	if w.BulkConcurrency < -1 {
		v.add(p+"bulk_concurrency", "is %d; must be -1 (do not consume the bulk lane), 0 (as concurrency) or positive", w.BulkConcurrency)
	}
	if w.BackendBorrowBelow < 0 {
		v.add(p+"backend_borrow_below", "is %s; must not be negative (0: never borrow)", w.BackendBorrowBelow)
	}
	positiveDur := func(name string, d interface{ String() string }, ok bool) {
		if !ok {
			v.add(p+name, "is %s; must be positive", d)
		}
	}
	positiveDur("ack_wait", w.AckWait, w.AckWait > 0)
	positiveDur("call_timeout", w.CallTimeout, w.CallTimeout > 0)
	positiveDur("retry_initial", w.RetryInitial, w.RetryInitial > 0)
	positiveDur("retry_max", w.RetryMax, w.RetryMax > 0)
	positiveDur("claim_lease", w.ClaimLease, w.ClaimLease > 0)
	positiveDur("shutdown_grace", w.ShutdownGrace, w.ShutdownGrace > 0)
	positiveDur("retry_for", w.RetryFor, w.RetryFor > 0)
	positiveDur("infra_wait", w.InfraWait, w.InfraWait > 0)
	if w.Concurrency > 0 && w.MaxAckPending > 0 && w.MaxAckPending < w.Concurrency {
		v.add(p+"max_ack_pending", "is %d; must be at least %sconcurrency (%d), or workers sit idle", w.MaxAckPending, p, w.Concurrency)
	}
	if w.ParkAfter != 0 && w.ParkAfter < time.Second {
		v.add(p+"park_after", "is %s; must be at least 1s (parked events come back on a whole second), or 0 to never park", w.ParkAfter)
	}
	if w.RetryInitial > 0 && w.RetryMax > 0 && w.RetryMax < w.RetryInitial {
		v.add(p+"retry_max", "must not be shorter than %sretry_initial", p)
	}
	if !(w.RetryMultiplier >= 1) { // also rejects NaN
		v.add(p+"retry_multiplier", "is %v; must be at least 1", w.RetryMultiplier)
	}
	if w.ClaimLease > MaxClaimLease {
		v.add(p+"claim_lease", "is %s; must be at most %s (readers end any claim that long after it was stored)", w.ClaimLease, MaxClaimLease)
	}
	if w.ClaimLease > 0 && w.AckWait > 0 && w.ClaimLease >= w.AckWait {
		v.add(p+"claim_lease", "must be shorter than %sack_wait", p)
	}
	switch w.Ownership {
	case "", "claims", "exclusive":
	default:
		v.add(p+"ownership", "is %q; must be claims or exclusive", w.Ownership)
	}
	if w.LeaseTTL != 0 && (w.LeaseTTL < ownership.MinTTL || w.LeaseTTL > ownership.MaxRecordTTL) {
		v.add(p+"lease_ttl", "is %s; must be within %s and %s", w.LeaseTTL, ownership.MinTTL, ownership.MaxRecordTTL)
	}
}

func (v *validator) nats(n *NATSConfig) {
	const p = kr + "nats."
	if n.URL == "" {
		e := n.Embedded
		if e.Host == "" {
			v.add(p+"embedded.host", "is required when %surl is empty", p)
		} else if v.embedded(n) && !loopbackHost(e.Host) {
			v.add(p+"embedded.host", "is %q, not a loopback address: the embedded server has no TLS, so its token and every "+
				"lookup reply (values included) would cross the network in clear; keep 127.0.0.1 (or ::1, localhost), or run an "+
				"external NATS with TLS (%surl, ca_file)", e.Host, p)
		}
		if e.Port < 1 || e.Port > 65535 {
			v.add(p+"embedded.port", "is %d; must be 1 to 65535", e.Port)
		}
		if e.StoreDir == "" {
			v.add(p+"embedded.store_dir", "is required when %surl is empty", p)
		}
		if v.embedded(n) && n.Token != "" && len(n.Token) < MinEmbeddedTokenLen {
			v.add(p+"token", "is shorter than %d bytes: on the embedded server (%surl empty) it is the only credential of every client",
				MinEmbeddedTokenLen, p)
		}
		if v.embedded(n) && strings.HasPrefix(n.Token, "$2") {
			v.add(p+"token", `starts with "$2", which nats-server reads as a bcrypt hash: the embedded server's clients, keyrelay's own included, `+
				"present this token itself, so it must be the plain token; choose one that does not start with \"$2\"")
		}
	} else {
		for _, u := range strings.Split(n.URL, ",") {
			if err := checkNATSURL(strings.TrimSpace(u)); err != "" {
				v.add(p+"url", "%s", err)
				break
			}
		}
	}
	var methods []string
	if n.CredsFile != "" {
		methods = append(methods, "creds_file")
	}
	if n.NKeyFile != "" {
		methods = append(methods, "nkey_file")
	}
	if n.User != "" || n.Password != "" {
		methods = append(methods, "user/password")
		if n.User == "" {
			v.add(p+"user", "is required with %spassword", p)
		}
		if n.Password == "" {
			v.add(p+"password", "is required with %suser", p)
		}
	}
	if n.Token != "" {
		methods = append(methods, "token")
	}
	if len(methods) > 1 {
		v.add(p+strings.SplitN(methods[1], "/", 2)[0], "conflicts with %s%s: set one authentication method (%s)", p, methods[0], strings.Join(methods, ", "))
	}
	if (n.CertFile == "") != (n.KeyFile == "") {
		if n.CertFile == "" {
			v.add(p+"cert_file", "is required with %skey_file", p)
		} else {
			v.add(p+"key_file", "is required with %scert_file", p)
		}
	}
}

func (v *validator) misc(c *Config) {
	k := &c.Keyrelay
	v.lookup(&k.Lookup, v.embedded(&k.NATS))
	if k.Sealing.KeyringFile == "" {
		v.add(kr+"sealing.keyring_file", "is required")
	}
	if k.HTTP.Enabled() {
		_, port, err := net.SplitHostPort(k.HTTP.Addr)
		if err != nil {
			v.add(kr+"http.addr", "%q is not host:port (or %q to disable)", clip(k.HTTP.Addr), HTTPOff)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			v.add(kr+"http.addr", "port %q is not 0 to 65535", clip(port))
		}
	}
	if err := ValidateTemplate(k.Naming.Template); err != nil {
		v.add(kr+"naming.template", "%s", err)
	} else if err := checkTemplateLiteral(k.Naming.Template, c.KeyManagement.PrefixForStoredVirtualKeys); err != "" {
		v.add(kr+"naming.template", "%s", err)
	}
	switch k.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add(kr+"log.level", "%q is not one of debug, info, warn, error", clip(k.Log.Level))
	}
	switch k.Log.Format {
	case "json", "console":
	default:
		v.add(kr+"log.format", "%q is not json or console", clip(k.Log.Format))
	}
	for name, opts := range k.Providers {
		path := join(kr+"providers", name)
		if err := checkName(name); err != "" {
			v.add(path, "provider name %s", err)
		}
		v.stringMap(path, opts)
	}
}

func (v *validator) stringMap(path string, m map[string]string) {
	for key, val := range m {
		if key == "" {
			v.add(path, "has an empty key")
			continue
		}
		if err := checkText(key); err != "" {
			v.add(join(path, key), "key %s", err)
		}
		if err := checkText(val); err != "" {
			v.add(join(path, key), "%s", err)
		}
	}
}

// checkName checks a backend name: printable, no spaces, bounded.
func checkName(s string) string {
	if len(s) > 64 {
		return "is longer than 64 bytes"
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError {
			return fmt.Sprintf("%q contains a space or control character", clip(s))
		}
	}
	return ""
}

// checkText checks free text: valid UTF-8, no control characters.
func checkText(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("contains control character %U", r)
		}
	}
	return ""
}

// checkPrefix checks the {prefix} value with the same rules as a secret
// name (it may be empty and may end with "/").
func checkPrefix(prefix string) string {
	if prefix == "" {
		return ""
	}
	// The prefix is followed by more of the name, so a trailing "/" is fine.
	if err := checkSecretName(strings.TrimSuffix(prefix, "/") + "/x"); err != nil {
		return err.Error()
	}
	return ""
}

// checkTemplateLiteral checks the template's fixed text by rendering it
// with the configured prefix (or a harmless one, when the prefix is itself
// invalid and reported as such) and harmless ids.
func checkTemplateLiteral(template, prefix string) string {
	if checkPrefix(prefix) != "" {
		prefix = "prefix/"
	}
	name := renderTemplate(template, prefix, "team", "key", "alias")
	if err := checkSecretName(name); err != nil {
		return fmt.Sprintf("renders names like %q, which %s", clip(name), err)
	}
	return ""
}

// checkNATSURL checks one entry of nats.url. Messages never echo the entry,
// which may carry a password.
func checkNATSURL(u string) string {
	if u == "" {
		return "has an empty entry"
	}
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	parsed, err := url.Parse(u)
	if err != nil {
		return "has an entry that is not a URL"
	}
	switch parsed.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Sprintf("has an entry with scheme %q; use nats, tls, ws or wss", clip(parsed.Scheme))
	}
	if parsed.Hostname() == "" {
		return "has an entry without a host"
	}
	return ""
}

func (v *validator) migration(m *MigrationConfig) {
	const p = "keyrelay.migration."
	if m.Grace < 0 {
		v.add(p+"grace", "is %s; must not be negative (0 deletes the old copies at the next sweep)", m.Grace)
	}
	if m.SweepEvery <= 0 {
		v.add(p+"sweep_every", "is %s; must be positive", m.SweepEvery)
	}
	if m.Concurrency <= 0 {
		v.add(p+"concurrency", "is %d; must be positive", m.Concurrency)
	}
}

// loopbackHost reports whether host (a listen address without port) only
// listens on the loopback interface: localhost, or a loopback IP.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
