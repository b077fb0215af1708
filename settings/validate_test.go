package settings

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidateNamesTheField(t *testing.T) {
	tests := map[string]struct {
		mutate func(c *Config)
		want   string // the error must contain this (field path first)
	}{
		"kms empty": {func(c *Config) { c.KeyManagementSystem = "" },
			"general_settings.key_management_system: is required"},
		"kms with space": {func(c *Config) { c.KeyManagementSystem = "hashicorp vault" },
			"general_settings.key_management_system: "},
		"access mode": {func(c *Config) { c.KeyManagement.AccessMode = "write" },
			`general_settings.key_management_settings.access_mode: "write" is not one of read_only, write_only, read_and_write`},
		"access mode empty": {func(c *Config) { c.KeyManagement.AccessMode = "" },
			"general_settings.key_management_settings.access_mode: "},
		"prefix dotdot": {func(c *Config) { c.KeyManagement.PrefixForStoredVirtualKeys = "../x/" },
			`general_settings.key_management_settings.prefix_for_stored_virtual_keys: `},
		"prefix leading slash": {func(c *Config) { c.KeyManagement.PrefixForStoredVirtualKeys = "/litellm/" },
			`general_settings.key_management_settings.prefix_for_stored_virtual_keys: secret name "/litellm/x" starts with "/"`},
		"description control char": {func(c *Config) { c.KeyManagement.Description = "a\nb" },
			"general_settings.key_management_settings.description: contains control character"},
		"tag empty key": {func(c *Config) { c.KeyManagement.Tags = map[string]string{"": "x"} },
			"general_settings.key_management_settings.tags: has an empty key"},
		"replicas 0": {func(c *Config) { c.Keyrelay.Streams.Replicas = 0 },
			"keyrelay.streams.replicas: is 0; must be 1 to 5"},
		"replicas 6": {func(c *Config) { c.Keyrelay.Streams.Replicas = 6 },
			"keyrelay.streams.replicas: is 6; must be 1 to 5"},
		"duplicate window": {func(c *Config) { c.Keyrelay.Streams.DuplicateWindow = 0 },
			"keyrelay.streams.duplicate_window: must be positive"},
		"duplicate window beyond max age": {func(c *Config) { c.Keyrelay.Streams.EventsMaxAge = time.Minute },
			"keyrelay.streams.duplicate_window: must not be longer than keyrelay.streams.events_max_age"},
		"events max age negative": {func(c *Config) { c.Keyrelay.Streams.EventsMaxAge = -time.Second },
			"keyrelay.streams.events_max_age: must not be negative"},
		"events max age not above retry for": {func(c *Config) { c.Keyrelay.Streams.EventsMaxAge = 6 * time.Hour },
			"keyrelay.streams.events_max_age: is 6h0m0s; must be longer than keyrelay.worker.retry_for (6h0m0s)"},
		"events max age below a longer retry for": {func(c *Config) { c.Keyrelay.Worker.RetryFor = 1000 * time.Hour },
			"keyrelay.streams.events_max_age: is 720h0m0s; must be longer than keyrelay.worker.retry_for (1000h0m0s), or 0: the lane streams remove events older than events_max_age whether or not they were handled"},
		"events max bytes 0": {func(c *Config) { c.Keyrelay.Streams.EventsMaxBytes = 0 },
			"keyrelay.streams.events_max_bytes: is 0; must be positive, or -1"},
		"confirmations max age": {func(c *Config) { c.Keyrelay.Streams.ConfirmationsMaxAge = -1 },
			"keyrelay.streams.confirmations_max_age: must not be negative"},
		"dlq max age": {func(c *Config) { c.Keyrelay.Streams.DLQMaxAge = -1 },
			"keyrelay.streams.dlq_max_age: must not be negative"},
		"concurrency": {func(c *Config) { c.Keyrelay.Worker.Concurrency = 0 },
			"keyrelay.worker.concurrency: is 0; must be positive"},
		"max deliver": {func(c *Config) { c.Keyrelay.Worker.MaxDeliver = -1 },
			"keyrelay.worker.max_deliver: is -1; must be positive"},
		"max ack pending": {func(c *Config) { c.Keyrelay.Worker.MaxAckPending = 0 },
			"keyrelay.worker.max_ack_pending: is 0; must be positive"},
		"max ack pending below concurrency": {func(c *Config) { c.Keyrelay.Worker.MaxAckPending = 16 },
			"keyrelay.worker.max_ack_pending: is 16; must be at least keyrelay.worker.concurrency (32)"},
		"in process attempts": {func(c *Config) { c.Keyrelay.Worker.InProcessAttempts = 0 },
			"keyrelay.worker.in_process_attempts: is 0; must be positive"},
		"backend slots negative": {func(c *Config) { c.Keyrelay.Worker.BackendSlots = -1 },
			"keyrelay.worker.backend_slots: is -1; must be between 0 (half of concurrency) and concurrency (32)"},
		"backend slots above concurrency": {func(c *Config) { c.Keyrelay.Worker.BackendSlots = 33 },
			"keyrelay.worker.backend_slots: is 33; must be between 0 (half of concurrency) and concurrency (32)"},
		"backend borrow below negative": {func(c *Config) { c.Keyrelay.Worker.BackendBorrowBelow = -time.Second },
			"keyrelay.worker.backend_borrow_below: is -1s; must not be negative (0: never borrow)"},
		"ack wait": {func(c *Config) { c.Keyrelay.Worker.AckWait = 0 },
			"keyrelay.worker.ack_wait: is 0s; must be positive"},
		"call timeout": {func(c *Config) { c.Keyrelay.Worker.CallTimeout = -time.Second },
			"keyrelay.worker.call_timeout: is -1s; must be positive"},
		"retry initial": {func(c *Config) { c.Keyrelay.Worker.RetryInitial = 0 },
			"keyrelay.worker.retry_initial: is 0s; must be positive"},
		"retry max": {func(c *Config) { c.Keyrelay.Worker.RetryMax = 0 },
			"keyrelay.worker.retry_max: is 0s; must be positive"},
		"retry max below initial": {func(c *Config) { c.Keyrelay.Worker.RetryMax = time.Millisecond },
			"keyrelay.worker.retry_max: must not be shorter than keyrelay.worker.retry_initial"},
		"park after under a second": {func(c *Config) { c.Keyrelay.Worker.ParkAfter = 500 * time.Millisecond },
			"keyrelay.worker.park_after: is 500ms; must be at least 1s"},
		"park after negative": {func(c *Config) { c.Keyrelay.Worker.ParkAfter = -time.Second },
			"keyrelay.worker.park_after: is -1s; must be at least 1s"},
		"retry multiplier": {func(c *Config) { c.Keyrelay.Worker.RetryMultiplier = 0.5 },
			"keyrelay.worker.retry_multiplier: is 0.5; must be at least 1"},
		"retry multiplier NaN": {func(c *Config) { c.Keyrelay.Worker.RetryMultiplier = math.NaN() },
			"keyrelay.worker.retry_multiplier: is NaN"},
		"claim lease": {func(c *Config) { c.Keyrelay.Worker.ClaimLease = 0 },
			"keyrelay.worker.claim_lease: is 0s; must be positive"},
		"claim lease vs ack wait": {func(c *Config) { c.Keyrelay.Worker.ClaimLease = c.Keyrelay.Worker.AckWait },
			"keyrelay.worker.claim_lease: must be shorter than keyrelay.worker.ack_wait"},
		"shutdown grace": {func(c *Config) { c.Keyrelay.Worker.ShutdownGrace = 0 },
			"keyrelay.worker.shutdown_grace: is 0s; must be positive"},
		"embedded port": {func(c *Config) { c.Keyrelay.NATS.Embedded.Port = 0 },
			"keyrelay.nats.embedded.port: is 0; must be 1 to 65535"},
		"embedded host": {func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "" },
			"keyrelay.nats.embedded.host: is required when keyrelay.nats.url is empty"},
		"embedded host on every interface": {func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "0.0.0.0" },
			`keyrelay.nats.embedded.host: is "0.0.0.0", not a loopback address: the embedded server has no TLS`},
		"embedded host on a network address": {func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "10.1.2.3" },
			`keyrelay.nats.embedded.host: is "10.1.2.3", not a loopback address`},
		"embedded host by name": {func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "nats.internal" },
			`keyrelay.nats.embedded.host: is "nats.internal", not a loopback address`},
		"embedded store dir": {func(c *Config) { c.Keyrelay.NATS.Embedded.StoreDir = "" },
			"keyrelay.nats.embedded.store_dir: is required"},
		"nats url scheme": {func(c *Config) { c.Keyrelay.NATS.URL = "http://nats:4222" },
			`keyrelay.nats.url: has an entry with scheme "http"`},
		"nats url empty entry": {func(c *Config) { c.Keyrelay.NATS.URL = "nats://a:4222,,nats://b:4222" },
			"keyrelay.nats.url: has an empty entry"},
		"nats two auth methods": {func(c *Config) { c.Keyrelay.NATS.CredsFile, c.Keyrelay.NATS.Token = "a.creds", "t" },
			"keyrelay.nats.token: conflicts with keyrelay.nats.creds_file"},
		"nats user without password": {func(c *Config) { c.Keyrelay.NATS.User = "u" },
			"keyrelay.nats.password: is required with keyrelay.nats.user"},
		"embedded nats token short": {func(c *Config) { c.Keyrelay.NATS.Token = "short-token" },
			"keyrelay.nats.token: is shorter than 16 bytes: on the embedded server (keyrelay.nats.url empty) it is the only credential"},
		"lookup nats_auth permissions on the embedded server": {func(c *Config) {
			c.Keyrelay.Lookup.NATSAuth = LookupNATSAuthPermissions
		}, "keyrelay.lookup.nats_auth: permissions needs an external NATS (keyrelay.nats.url)"},
		"nats cert without key": {func(c *Config) { c.Keyrelay.NATS.CertFile = "c.pem" },
			"keyrelay.nats.key_file: is required with keyrelay.nats.cert_file"},
		"keyring": {func(c *Config) { c.Keyrelay.Sealing.KeyringFile = "" },
			"keyrelay.sealing.keyring_file: is required"},
		"http addr": {func(c *Config) { c.Keyrelay.HTTP.Addr = "localhost" },
			`keyrelay.http.addr: "localhost" is not host:port`},
		"http port": {func(c *Config) { c.Keyrelay.HTTP.Addr = "127.0.0.1:99999" },
			`keyrelay.http.addr: port "99999" is not 0 to 65535`},
		"template unknown placeholder": {func(c *Config) { c.Keyrelay.Naming.Template = "{prefix}{team}/{key_id}" },
			`keyrelay.naming.template: template "{prefix}{team}/{key_id}": unknown placeholder "{team}"`},
		"template without key": {func(c *Config) { c.Keyrelay.Naming.Template = "{prefix}{team_id}" },
			"keyrelay.naming.template: template \"{prefix}{team_id}\" must contain {key_id} or {alias}"},
		"template unbalanced": {func(c *Config) { c.Keyrelay.Naming.Template = "{prefix}{key_id" },
			"keyrelay.naming.template: template \"{prefix}{key_id\" has a '{' without '}'"},
		"template stray brace": {func(c *Config) { c.Keyrelay.Naming.Template = "{prefix}}{key_id}" },
			"keyrelay.naming.template: template \"{prefix}}{key_id}\" has a '}' without '{'"},
		"template empty": {func(c *Config) { c.Keyrelay.Naming.Template = "" },
			"keyrelay.naming.template: template is empty"},
		"template literal dotdot": {func(c *Config) { c.Keyrelay.Naming.Template = "{prefix}../{key_id}" },
			`keyrelay.naming.template: renders names like "litellm/../key"`},
		"template empty segment": {func(c *Config) { c.Keyrelay.Naming.Template = "{prefix}{team_id}//{key_id}" },
			`keyrelay.naming.template: renders names like "litellm/team//key", which secret name`},
		"template leading slash with empty prefix": {func(c *Config) {
			c.KeyManagement.PrefixForStoredVirtualKeys = ""
			c.Keyrelay.Naming.Template = "/{key_id}"
		}, `keyrelay.naming.template: renders names like "/key"`},
		"log level": {func(c *Config) { c.Keyrelay.Log.Level = "trace" },
			`keyrelay.log.level: "trace" is not one of debug, info, warn, error`},
		"log format": {func(c *Config) { c.Keyrelay.Log.Format = "text" },
			`keyrelay.log.format: "text" is not json or console`},
		"provider name": {func(c *Config) { c.Keyrelay.Providers = map[string]map[string]string{"a b": nil} },
			`keyrelay.providers."a b": provider name`},
		"provider option": {func(c *Config) {
			c.Keyrelay.Providers = map[string]map[string]string{"hashicorp_vault": {"mount": "a\x00"}}
		}, "keyrelay.providers.hashicorp_vault.mount: contains control character"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := Default()
			tc.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate succeeded, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := map[string]func(c *Config){
		"defaults":                  func(*Config) {},
		"three replicas":            func(c *Config) { c.Keyrelay.Streams.Replicas = 3 },
		"five replicas":             func(c *Config) { c.Keyrelay.Streams.Replicas = 5 },
		"unbounded events":          func(c *Config) { c.Keyrelay.Streams.EventsMaxAge, c.Keyrelay.Streams.EventsMaxBytes = 0, -1 },
		"no age limit, long retry":  func(c *Config) { c.Keyrelay.Streams.EventsMaxAge, c.Keyrelay.Worker.RetryFor = 0, 1000*time.Hour },
		"age just above retry_for":  func(c *Config) { c.Keyrelay.Streams.EventsMaxAge = 6*time.Hour + time.Second },
		"external nats":             func(c *Config) { c.Keyrelay.NATS.URL = "nats://a:4222, tls://b:4222,c:4222" },
		"external nats no embedded": func(c *Config) { c.Keyrelay.NATS.URL, c.Keyrelay.NATS.Embedded = "nats://a", EmbeddedConfig{} },
		"user password":             func(c *Config) { c.Keyrelay.NATS.User, c.Keyrelay.NATS.Password = "u", "p" },
		"mtls":                      func(c *Config) { c.Keyrelay.NATS.CertFile, c.Keyrelay.NATS.KeyFile = "c", "k" },
		"http off":                  func(c *Config) { c.Keyrelay.HTTP.Addr = HTTPOff },
		"http any port":             func(c *Config) { c.Keyrelay.HTTP.Addr = ":0" },
		"alias template":            func(c *Config) { c.Keyrelay.Naming.Template = LiteLLMNameTemplate },
		"no prefix":                 func(c *Config) { c.KeyManagement.PrefixForStoredVirtualKeys = "" },
		"prefix without slash":      func(c *Config) { c.KeyManagement.PrefixForStoredVirtualKeys = "litellm-" },
		"read_only":                 func(c *Config) { c.KeyManagement.AccessMode = "read_only" },
		"write_only":                func(c *Config) { c.KeyManagement.AccessMode = "write_only" },
		"console debug":             func(c *Config) { c.Keyrelay.Log = LogConfig{Level: "debug", Format: "console"} },
		"embedded nats token":       func(c *Config) { c.Keyrelay.NATS.Token = "sixteen-bytes-ok" },
		"embedded on ::1":           func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "::1" },
		"embedded on [::1]":         func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "[::1]" },
		"embedded on localhost":     func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "localhost" },
		"embedded on 127.0.0.2":     func(c *Config) { c.Keyrelay.NATS.Embedded.Host = "127.0.0.2" },
		"external nats, any embedded host": func(c *Config) {
			c.Keyrelay.NATS.URL, c.Keyrelay.NATS.Embedded.Host = "nats://a", "0.0.0.0"
		},
		"external nats short token": func(c *Config) { c.Keyrelay.NATS.URL, c.Keyrelay.NATS.Token = "nats://a", "t" },
		"external nats_auth permissions": func(c *Config) {
			c.Keyrelay.NATS.URL, c.Keyrelay.Lookup.NATSAuth = "nats://a", LookupNATSAuthPermissions
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := Default()
			mutate(c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Keyrelay.Worker.Concurrency = 0
	c.Keyrelay.Log.Format = "xml"
	err := c.Validate()
	for _, want := range []string{"keyrelay.worker.concurrency", "keyrelay.log.format"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestValidateNeverEchoesNATSCredentials(t *testing.T) {
	c := Default()
	c.Keyrelay.NATS.URL = "http://user:hunter2@nats:4222"
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error = %v; want an error that does not echo the password", err)
	}
}
