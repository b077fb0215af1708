package settings

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// env returns a getenv backed by m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

var noEnv = env(nil)

func mustParse(t *testing.T, yaml string, getenv func(string) string) (*Config, []string) {
	t.Helper()
	c, warnings, err := Parse([]byte(yaml), getenv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c, warnings
}

func TestLiteLLMConfigParsesUnchanged(t *testing.T) {
	c, warnings, err := Load(filepath.Join("testdata", "litellm_config.yaml"), noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	km := c.KeyManagement
	checks := map[string]struct{ got, want any }{
		"key_management_system": {c.KeyManagementSystem, "hashicorp_vault"},
		"store_virtual_keys":    {km.StoreVirtualKeys, true},
		"prefix":                {km.PrefixForStoredVirtualKeys, "litellm/"},
		"access_mode":           {km.AccessMode, "read_and_write"},
		"hosted_keys":           {km.HostedKeys, []string{"litellm_master_key", "OPENAI_API_KEY"}},
		"description":           {km.Description, "Virtual key issued by the LiteLLM gateway"},
		"tags":                  {km.Tags, map[string]string{"Environment": "Prod", "Owner": "AI-Platform"}},
		"keyrelay defaults":     {c.Keyrelay, Default().Keyrelay},
	}
	for name, tc := range checks {
		t.Run(name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %#v, want %#v", tc.got, tc.want)
			}
		})
	}
}

func TestExampleFileParsesWithoutWarnings(t *testing.T) {
	path := filepath.Join("..", "deploy", "keyrelay.example.yaml")
	c, warnings, err := Load(path, noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q, want none", warnings)
	}
	// The example documents the defaults: it must say exactly what Default
	// does, so the file and the code cannot drift apart.
	want := Default()
	c.Getenv, want.Getenv = nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example differs from Default():\n got %+v\nwant %+v", c, want)
	}
}

func TestDefaults(t *testing.T) {
	inputs := map[string]string{
		"Default()":                 "",
		"empty file":                "",
		"comments only":             "# nothing\n",
		"null document":             "~\n",
		"LiteLLM without kms":       "model_list: []\ngeneral_settings:\n  master_key: sk-1234\n",
		"empty sections":            "general_settings:\nkeyrelay:\n",
		"empty kms section":         "general_settings:\n  key_management_settings:\n",
		"null values keep defaults": "general_settings:\n  key_management_system:\n  key_management_settings:\n    store_virtual_keys:\n    prefix_for_stored_virtual_keys: ~\nkeyrelay:\n  worker:\n    concurrency: null\n",
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			var c *Config
			if name == "Default()" {
				c = Default()
				if err := c.Validate(); err != nil {
					t.Fatalf("Default().Validate: %v", err)
				}
			} else {
				var warnings []string
				c, warnings = mustParse(t, in, noEnv)
				if len(warnings) != 0 {
					t.Errorf("warnings = %q", warnings)
				}
			}
			k := c.Keyrelay
			w := k.Worker
			defaults := map[string]struct{ got, want any }{
				"key_management_system":              {c.KeyManagementSystem, DefaultKeyManagementSystem},
				"store_virtual_keys":                 {c.KeyManagement.StoreVirtualKeys, true},
				"prefix_for_stored_virtual_keys":     {c.KeyManagement.PrefixForStoredVirtualKeys, "litellm/"},
				"access_mode":                        {c.KeyManagement.AccessMode, "read_and_write"},
				"nats.url":                           {k.NATS.URL, ""},
				"nats.embedded.host":                 {k.NATS.Embedded.Host, "127.0.0.1"},
				"nats.embedded.port":                 {k.NATS.Embedded.Port, 14222},
				"nats.embedded.store_dir":            {k.NATS.Embedded.StoreDir, "./data/nats"},
				"lookup.nats on the embedded server": {k.Lookup.NATSEnabled(k.NATS.IsEmbedded()), false},
				"streams.replicas":                   {k.Streams.Replicas, 1},
				"streams.duplicate_window":           {k.Streams.DuplicateWindow, 10 * time.Minute},
				"streams.events_max_age":             {k.Streams.EventsMaxAge, 720 * time.Hour},
				"streams.events_max_bytes":           {k.Streams.EventsMaxBytes, int64(1 << 30)},
				"streams.confirmations_max_age":      {k.Streams.ConfirmationsMaxAge, 720 * time.Hour},
				"streams.dlq_max_age":                {k.Streams.DLQMaxAge, time.Duration(0)},
				"streams.dlq_max_bytes":              {k.Streams.DLQMaxBytes, int64(256 << 20)},
				"streams.dlq_max_msgs":               {k.Streams.DLQMaxMsgs, int64(100000)},
				"streams.confirmations_max_bytes":    {k.Streams.ConfirmationsMaxBytes, int64(1 << 30)},
				"streams.confirmations_max_msgs":     {k.Streams.ConfirmationsMaxMsgs, int64(10000000)},
				"worker.enabled":                     {w.IsEnabled(), true},
				"worker.concurrency":                 {w.Concurrency, 32},
				"worker.ack_wait":                    {w.AckWait, 60 * time.Second},
				"worker.max_deliver":                 {w.MaxDeliver, 10000},
				"worker.retry_for":                   {w.RetryFor, 6 * time.Hour},
				"worker.infra_wait":                  {w.InfraWait, 30 * time.Second},
				"worker.max_ack_pending":             {w.MaxAckPending, 65536},
				"worker.call_timeout":                {w.CallTimeout, 15 * time.Second},
				"worker.retry_initial":               {w.RetryInitial, 100 * time.Millisecond},
				"worker.retry_max":                   {w.RetryMax, 30 * time.Second},
				"worker.park_after":                  {w.ParkAfter, 10 * time.Second},
				"worker.retry_multiplier":            {w.RetryMultiplier, 2.0},
				"worker.in_process_attempts":         {w.InProcessAttempts, 3},
				"worker.claim_lease":                 {w.ClaimLease, 30 * time.Second},
				"worker.ownership":                   {w.Ownership, "claims"},
				"worker.lease_ttl":                   {w.LeaseTTL, 15 * time.Second},
				"worker.shutdown_grace":              {w.ShutdownGrace, 20 * time.Second},
				"worker.adopt_unowned":               {w.AdoptUnowned, false},
				"worker.backend_slots":               {w.BackendSlots, 0},
				"worker.backend_borrow_below":        {w.BackendBorrowBelow, 250 * time.Millisecond},
				"sealing.keyring_file":               {k.Sealing.KeyringFile, "./data/keyring.json"},
				"sealing.allow_plaintext_values":     {k.Sealing.AllowPlaintext, false},
				"http.addr":                          {k.HTTP.Addr, "127.0.0.1:9464"},
				"http enabled":                       {k.HTTP.Enabled(), true},
				"naming.template":                    {k.Naming.Template, "{prefix}{team_id}/{key_id}"},
				"log.level":                          {k.Log.Level, "info"},
				"log.format":                         {k.Log.Format, "json"},
				"providers":                          {len(k.Providers), 0},
			}
			for field, d := range defaults {
				if !reflect.DeepEqual(d.got, d.want) {
					t.Errorf("%s = %#v, want %#v", field, d.got, d.want)
				}
			}
		})
	}
}

func TestExplicitValuesOverrideDefaults(t *testing.T) {
	tests := map[string]struct {
		yaml  string
		check func(*Config) any
		want  any
	}{
		"store_virtual_keys false honoured": {
			yaml:  "general_settings:\n  key_management_settings:\n    store_virtual_keys: false\n",
			check: func(c *Config) any { return c.KeyManagement.StoreVirtualKeys },
			want:  false,
		},
		"store_virtual_keys PyYAML no": {
			yaml:  "general_settings:\n  key_management_settings:\n    store_virtual_keys: no\n",
			check: func(c *Config) any { return c.KeyManagement.StoreVirtualKeys },
			want:  false,
		},
		"store_virtual_keys quoted True": {
			yaml:  "general_settings:\n  key_management_settings:\n    store_virtual_keys: \"True\"\n",
			check: func(c *Config) any { return c.KeyManagement.StoreVirtualKeys },
			want:  true,
		},
		"empty prefix honoured": {
			yaml:  "general_settings:\n  key_management_settings:\n    prefix_for_stored_virtual_keys: \"\"\n",
			check: func(c *Config) any { return c.KeyManagement.PrefixForStoredVirtualKeys },
			want:  "",
		},
		"events_max_age 0 keeps events": {
			yaml:  "keyrelay:\n  streams:\n    events_max_age: 0\n",
			check: func(c *Config) any { return c.Keyrelay.Streams.EventsMaxAge },
			want:  time.Duration(0),
		},
		"durations as Go strings": {
			yaml:  "keyrelay:\n  worker:\n    ack_wait: 2m30s\n    claim_lease: 90s\n",
			check: func(c *Config) any { return []time.Duration{c.Keyrelay.Worker.AckWait, c.Keyrelay.Worker.ClaimLease} },
			want:  []time.Duration{150 * time.Second, 90 * time.Second},
		},
		"worker disabled": {
			yaml:  "keyrelay:\n  worker:\n    enabled: false\n",
			check: func(c *Config) any { return c.Keyrelay.Worker.IsEnabled() },
			want:  false,
		},
		"http off": {
			yaml:  "keyrelay:\n  http:\n    addr: \"off\"\n",
			check: func(c *Config) any { return c.Keyrelay.HTTP.Enabled() },
			want:  false,
		},
		"http empty disables": {
			yaml:  "keyrelay:\n  http:\n    addr: \"\"\n",
			check: func(c *Config) any { return c.Keyrelay.HTTP.Enabled() },
			want:  false,
		},
		"events_max_bytes unlimited": {
			yaml:  "keyrelay:\n  streams:\n    events_max_bytes: -1\n",
			check: func(c *Config) any { return c.Keyrelay.Streams.EventsMaxBytes },
			want:  int64(-1),
		},
		"providers map": {
			yaml:  "keyrelay:\n  providers:\n    hashicorp_vault:\n      mount: kv\n      port: 8200\n",
			check: func(c *Config) any { return c.Keyrelay.Providers },
			want:  map[string]map[string]string{"hashicorp_vault": {"mount": "kv", "port": "8200"}},
		},
		"LiteLLM aws fields": {
			yaml: "general_settings:\n  key_management_system: aws_secret_manager\n  key_management_settings:\n" +
				"    aws_region_name: eu-west-1\n    aws_role_name: arn:aws:iam::1:role/r\n    replica_regions: [us-east-1, us-west-2]\n",
			check: func(c *Config) any {
				return []any{c.KeyManagement.AWSRegionName, c.KeyManagement.AWSRoleName, c.KeyManagement.ReplicaRegions}
			},
			want: []any{"eu-west-1", "arn:aws:iam::1:role/r", []string{"us-east-1", "us-west-2"}},
		},
		"YAML merge keys": {
			yaml:  "base: &w\n  concurrency: 8\n  max_deliver: 4\nkeyrelay:\n  worker:\n    <<: *w\n    max_deliver: 5\n",
			check: func(c *Config) any { return []int{c.Keyrelay.Worker.Concurrency, c.Keyrelay.Worker.MaxDeliver} },
			want:  []int{8, 5},
		},
		"duplicate ignored LiteLLM keys tolerated": {
			yaml:  "model_list: []\nmodel_list: []\ngeneral_settings:\n  master_key: a\n  master_key: b\n",
			check: func(c *Config) any { return c.KeyManagementSystem },
			want:  "local",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, warnings := mustParse(t, tc.yaml, noEnv)
			if len(warnings) != 0 {
				t.Errorf("warnings = %q", warnings)
			}
			if got := tc.check(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestEnvSubstitution(t *testing.T) {
	vars := env(map[string]string{
		"KMS":         "azure_key_vault",
		"PREFIX":      "gateway/",
		"NATS_URL":    "nats://nats-1:4222,nats://nats-2:4222",
		"NATS_PASS":   "s3cret",
		"CONC":        "64",
		"ACK":         "2m",
		"STORE":       "false",
		"OWNER":       "platform",
		"VAULT_MOUNT": "kv",
		"HOSTED":      "OPENAI_API_KEY",
	})
	tests := map[string]struct {
		yaml     string
		check    func(*Config) any
		want     any
		warnings []string
	}{
		"key_management_system": {
			yaml:  "general_settings:\n  key_management_system: os.environ/KMS\n",
			check: func(c *Config) any { return c.KeyManagementSystem },
			want:  "azure_key_vault",
		},
		"prefix": {
			yaml:  "general_settings:\n  key_management_settings:\n    prefix_for_stored_virtual_keys: os.environ/PREFIX\n",
			check: func(c *Config) any { return c.KeyManagement.PrefixForStoredVirtualKeys },
			want:  "gateway/",
		},
		"bool": {
			yaml:  "general_settings:\n  key_management_settings:\n    store_virtual_keys: os.environ/STORE\n",
			check: func(c *Config) any { return c.KeyManagement.StoreVirtualKeys },
			want:  false,
		},
		"nats url and password": {
			yaml:  "keyrelay:\n  nats:\n    url: os.environ/NATS_URL\n    user: keyrelay\n    password: os.environ/NATS_PASS\n",
			check: func(c *Config) any { return []string{c.Keyrelay.NATS.URL, c.Keyrelay.NATS.Password} },
			want:  []string{"nats://nats-1:4222,nats://nats-2:4222", "s3cret"},
		},
		"int and duration": {
			yaml:  "keyrelay:\n  worker:\n    concurrency: os.environ/CONC\n    ack_wait: os.environ/ACK\n",
			check: func(c *Config) any { return []any{c.Keyrelay.Worker.Concurrency, c.Keyrelay.Worker.AckWait} },
			want:  []any{64, 2 * time.Minute},
		},
		"map values and list items": {
			yaml: "general_settings:\n  key_management_settings:\n    tags: {Owner: os.environ/OWNER}\n    hosted_keys: [os.environ/HOSTED, literal]\n" +
				"keyrelay:\n  providers:\n    hashicorp_vault: {mount: os.environ/VAULT_MOUNT}\n",
			check: func(c *Config) any {
				return []any{c.KeyManagement.Tags, c.KeyManagement.HostedKeys, c.Keyrelay.Providers["hashicorp_vault"]}
			},
			want: []any{map[string]string{"Owner": "platform"}, []string{"OPENAI_API_KEY", "literal"}, map[string]string{"mount": "kv"}},
		},
		"unset variable keeps the default and warns": {
			yaml:     "general_settings:\n  key_management_settings:\n    prefix_for_stored_virtual_keys: os.environ/MISSING\n",
			check:    func(c *Config) any { return c.KeyManagement.PrefixForStoredVirtualKeys },
			want:     "litellm/",
			warnings: []string{"general_settings.key_management_settings.prefix_for_stored_virtual_keys (line 3): environment variable MISSING is not set or empty"},
		},
		"unset variable drops a map entry": {
			yaml:     "general_settings:\n  key_management_settings:\n    tags: {Owner: os.environ/MISSING, Team: a}\n",
			check:    func(c *Config) any { return c.KeyManagement.Tags },
			want:     map[string]string{"Team": "a"},
			warnings: []string{"general_settings.key_management_settings.tags.Owner (line 3): environment variable MISSING"},
		},
		"only a whole value is a reference": {
			yaml:  "general_settings:\n  key_management_settings:\n    description: see os.environ/KMS\n",
			check: func(c *Config) any { return c.KeyManagement.Description },
			want:  "see os.environ/KMS",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, warnings := mustParse(t, tc.yaml, vars)
			if got := tc.check(c); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
			checkWarnings(t, warnings, tc.warnings)
		})
	}
}

func TestParseKeepsGetenv(t *testing.T) {
	c, _ := mustParse(t, "", env(map[string]string{"HCP_VAULT_ADDR": "https://vault:8200"}))
	if got := c.Env("HCP_VAULT_ADDR"); got != "https://vault:8200" {
		t.Errorf("Env(HCP_VAULT_ADDR) = %q", got)
	}
	c, _ = mustParse(t, "", nil)
	t.Setenv("KEYRELAY_SETTINGS_TEST", "x")
	if got := c.Env("KEYRELAY_SETTINGS_TEST"); got != "x" {
		t.Errorf("nil getenv: Env = %q, want the process environment", got)
	}
}

func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("warnings = %q, want %d matching %q", got, len(want), want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("warning[%d] = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

func TestWarnings(t *testing.T) {
	tests := map[string]struct {
		yaml     string
		warnings []string
	}{
		"LiteLLM sections are silent": {
			yaml: "model_list: [{model_name: a, litellm_params: {model: openai/a}}]\nlitellm_settings: {drop_params: true}\n" +
				"router_settings: {routing_strategy: simple-shuffle}\nenvironment_variables: {X: y}\n" +
				"general_settings: {master_key: sk-1, database_url: postgres://x, alerting: [slack]}\n",
		},
		"LiteLLM-only kms fields are silent": {
			yaml: "general_settings:\n  key_management_settings:\n    custom_secret_manager: m.C\n    aws_session_name: s\n" +
				"    aws_external_id: e\n    aws_profile_name: p\n    aws_web_identity_token: t\n    aws_sts_endpoint: https://sts\n",
		},
		"unknown key in key_management_settings": {
			yaml:     "general_settings:\n  key_management_settings:\n    store_virtual_key: true\n",
			warnings: []string{"general_settings.key_management_settings.store_virtual_key (line 3): unknown key, ignored; did you mean store_virtual_keys?"},
		},
		"unknown keyrelay section": {
			yaml:     "keyrelay:\n  cache:\n    ttl: 5m\n",
			warnings: []string{"keyrelay.cache (line 2): unknown key"},
		},
		"unknown nested key": {
			yaml:     "keyrelay:\n  worker:\n    concurency: 4\n  nats:\n    embedded:\n      prot: 1\n",
			warnings: []string{"keyrelay.worker.concurency (line 3): unknown key, ignored; did you mean concurrency?", "keyrelay.nats.embedded.prot (line 6): unknown key, ignored; did you mean port?"},
		},
		"hostile key is quoted": {
			yaml:     "keyrelay:\n  \"a.b\\x1b[31m\": 1\n",
			warnings: []string{`keyrelay."a.b\x1b[31m" (line 2): unknown key`},
		},
		"misspelt keyrelay section": {
			yaml:     "keyrelai:\n  worker: {}\n",
			warnings: []string{"keyrelai (line 1): top-level section ignored; did you mean keyrelay?"},
		},
		"kms at the top level": {
			yaml:     "key_management_system: hashicorp_vault\n",
			warnings: []string{"key_management_system (line 1): ignored at the top level"},
		},
		"read_only with stored keys": {
			yaml:     "general_settings:\n  key_management_settings:\n    access_mode: read_only\n",
			warnings: []string{"general_settings.key_management_settings.access_mode: read_only makes keyrelay reject every key write"},
		},
		"read_only without stored keys is fine": {
			yaml: "general_settings:\n  key_management_settings:\n    access_mode: read_only\n    store_virtual_keys: false\n",
		},
		"custom backend": {
			yaml:     "general_settings:\n  key_management_system: custom\n",
			warnings: []string{`general_settings.key_management_system: "custom"`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, warnings := mustParse(t, tc.yaml, noEnv)
			checkWarnings(t, warnings, tc.warnings)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := map[string]struct {
		yaml string
		want string // substring of the error
	}{
		"invalid YAML":          {"keyrelay: [\n", "invalid YAML"},
		"two documents":         {"keyrelay: {}\n---\nkeyrelay: {}\n", "second YAML document"},
		"top level not a map":   {"- a\n- b\n", "top level must be a mapping"},
		"general_settings list": {"general_settings: [a]\n", "general_settings (line 1): must be a mapping"},
		"kms not a map":         {"general_settings:\n  key_management_settings: yes\n", "general_settings.key_management_settings (line 2): must be a mapping"},
		"bad bool": {"general_settings:\n  key_management_settings:\n    store_virtual_keys: maybe\n",
			`general_settings.key_management_settings.store_virtual_keys (line 3): "maybe" is not true or false`},
		"bad int":              {"keyrelay:\n  worker:\n    concurrency: lots\n", `keyrelay.worker.concurrency (line 3): "lots" is not a whole number`},
		"duration no unit":     {"keyrelay:\n  worker:\n    ack_wait: 60\n", `keyrelay.worker.ack_wait (line 3): "60" has no unit`},
		"bad duration":         {"keyrelay:\n  streams:\n    duplicate_window: ten minutes\n", `keyrelay.streams.duplicate_window (line 3): "ten minutes" is not a Go duration`},
		"list for string":      {"keyrelay:\n  nats:\n    url: [a, b]\n", "keyrelay.nats.url (line 3): must be a single value, not a list"},
		"string for list":      {"general_settings:\n  key_management_settings:\n    hosted_keys: A\n", "general_settings.key_management_settings.hosted_keys (line 3): must be a list"},
		"duplicate key":        {"keyrelay:\n  worker:\n    concurrency: 1\n    concurrency: 2\n", "keyrelay.worker.concurrency (line 4): duplicate key (first at line 3)"},
		"duplicate section":    {"keyrelay: {}\nkeyrelay: {}\n", "keyrelay (line 2): duplicate key"},
		"bad env name":         {"keyrelay:\n  nats:\n    url: os.environ/\n", "keyrelay.nats.url (line 3): \"os.environ/\" is not a valid environment variable reference"},
		"env value not echoed": {"keyrelay:\n  worker:\n    concurrency: os.environ/SECRET\n", "keyrelay.worker.concurrency (line 3): the value of SECRET is not a whole number"},
		"validation runs":      {"keyrelay:\n  streams:\n    replicas: 7\n", "keyrelay.streams.replicas: is 7"},
	}
	getenv := env(map[string]string{"SECRET": "hunter2"})
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, _, err := Parse([]byte(tc.yaml), getenv)
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tc.want)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error echoes an environment value: %q", err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("keyrelay:\n  log:\n    level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		path string
		want string
	}{
		"missing file":  {filepath.Join(dir, "nope.yaml"), "nope.yaml"},
		"invalid value": {bad, bad + `: keyrelay.log.level: "loud" is not one of debug, info, warn, error`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := Load(tc.path, noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestOwnershipSettings: the two modes parse; anything else, and a lease
// TTL the lease refuses, are errors naming the field.
func TestOwnershipSettings(t *testing.T) {
	for _, tc := range []struct {
		yaml, wantPath string
	}{
		{"keyrelay:\n  worker:\n    ownership: exclusive\n    lease_ttl: 5s\n", ""},
		{"keyrelay:\n  worker:\n    ownership: claims\n", ""},
		{"keyrelay:\n  worker:\n    ownership: partitioned\n", "keyrelay.worker.ownership"},
		{"keyrelay:\n  worker:\n    lease_ttl: 50ms\n", "keyrelay.worker.lease_ttl"},
		{"keyrelay:\n  worker:\n    lease_ttl: 11m\n", "keyrelay.worker.lease_ttl"},
	} {
		_, _, err := Parse([]byte(tc.yaml), noEnv)
		var fe *FieldError
		switch {
		case tc.wantPath == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.wantPath != "" && (!errors.As(err, &fe) || fe.Path != tc.wantPath):
			t.Errorf("%q: error %v, want one naming %s", tc.yaml, err, tc.wantPath)
		}
	}
}

func TestFieldErrorAs(t *testing.T) {
	_, _, err := Parse([]byte("keyrelay:\n  worker:\n    claim_lease: 2m\n"), noEnv)
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FieldError", err)
	}
	if fe.Path != "keyrelay.worker.claim_lease" {
		t.Errorf("Path = %q", fe.Path)
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", resolveYAML, "keyrelay: &a\n  worker:\n    <<: *a\n",
		"general_settings:\n  key_management_settings:\n    tags: {a: os.environ/X}\n",
		"keyrelay:\n  providers:\n    x: {y: z}\n  worker: {ack_wait: 1m, claim_lease: 10s}\n",
	} {
		f.Add([]byte(seed))
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "litellm_config.yaml")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse(data, env(map[string]string{"X": "1"}))
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c != nil, err)
		}
		if c != nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse returned a config that fails Validate: %v", err)
			}
		}
	})
}
