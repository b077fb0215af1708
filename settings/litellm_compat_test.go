package settings

import (
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/events"
)

// LiteLLM's KeyManagementEventHooks._get_secret_name joins
// prefix_for_stored_virtual_keys and the key's name with a "/" when the
// prefix does not end with one: "myorg" stores alias "a" as "myorg/a". A
// LiteLLM file read unchanged must name keys as LiteLLM does.
func TestAuditLiteLLMPrefixWithoutSlash(t *testing.T) {
	const yaml = `
general_settings:
  key_management_system: hashicorp_vault
  key_management_settings:
    store_virtual_keys: true
    prefix_for_stored_virtual_keys: "myorg"
keyrelay:
  naming:
    template: "{prefix}{alias}"
`
	c, _ := mustParse(t, yaml, noEnv)
	tests := map[string]struct {
		team *events.TeamSettings
		want string
	}{
		"global prefix":            {nil, "myorg/my-alias"},
		"team prefix":              {&events.TeamSettings{Prefix: ptr("team-a")}, "team-a/my-alias"},
		"team prefix with slash":   {&events.TeamSettings{Prefix: ptr("team-a/")}, "team-a/my-alias"},
		"team empty prefix":        {&events.TeamSettings{Prefix: ptr("")}, "my-alias"},
		"default template":         {&events.TeamSettings{NameTemplate: DefaultNameTemplate}, "myorg/team-a/k1"},
		"prefix in middle of name": {&events.TeamSettings{NameTemplate: "x/{prefix}{alias}"}, "x/myorg/my-alias"},
		// A separator written in the template is the template's own.
		"template separator kept": {&events.TeamSettings{NameTemplate: "{prefix}-{key_id}"}, "myorg-k1"},
		"template slash kept":     {&events.TeamSettings{NameTemplate: "{prefix}/{key_id}"}, "myorg/k1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := c.Resolve(tc.team).SecretName("team-a", "k1", "my-alias")
			if err != nil || got != tc.want {
				t.Errorf("SecretName = %q, %v; want %q (LiteLLM's name)", got, err, tc.want)
			}
		})
	}
}

// LiteLLM's proxy sets every entry of the top-level environment_variables
// section into its environment (ProxyConfig._load_environment_variables)
// before it reads general_settings and initializes the secret manager: the
// file's value replaces the process's, an "os.environ/NAME" value is
// resolved (and left alone when NAME is unset). The secret managers then
// read HCP_VAULT_ADDR, AZURE_KEY_VAULT_URI, ... from there, and
// os.environ/ references see them. keyrelay must see the same variables,
// or it writes to another Vault, namespace or prefix than the gateway.
func TestAuditLiteLLMEnvironmentVariablesSection(t *testing.T) {
	const yaml = `
environment_variables:
  HCP_VAULT_ADDR: https://vault.corp:8200
  HCP_VAULT_NAMESPACE: os.environ/VAULT_NS
  HCP_VAULT_MOUNT_NAME: os.environ/UNSET_MOUNT
  KEY_PREFIX: gateway-keys/
  RETRIES: 5
general_settings:
  key_management_system: hashicorp_vault
  key_management_settings:
    prefix_for_stored_virtual_keys: os.environ/KEY_PREFIX
`
	process := env(map[string]string{
		"HCP_VAULT_ADDR":       "https://other-vault:8200", // the file's value wins, as in LiteLLM
		"VAULT_NS":             "admin/gateway",
		"HCP_VAULT_MOUNT_NAME": "kv-process", // kept: its os.environ/ reference is unset
		"PATH":                 "/usr/bin",
	})
	c, warnings := mustParse(t, yaml, process)
	if len(warnings) != 0 {
		t.Errorf("warnings: %q", warnings)
	}
	for name, want := range map[string]string{
		"HCP_VAULT_ADDR":       "https://vault.corp:8200",
		"HCP_VAULT_NAMESPACE":  "admin/gateway",
		"HCP_VAULT_MOUNT_NAME": "kv-process",
		"KEY_PREFIX":           "gateway-keys/",
		"RETRIES":              "5",
		"PATH":                 "/usr/bin",
	} {
		if got := c.Env(name); got != want {
			t.Errorf("Env(%s) = %q, want %q (as LiteLLM sees it)", name, got, want)
		}
	}
	if got := c.KeyManagement.PrefixForStoredVirtualKeys; got != "gateway-keys/" {
		t.Errorf("prefix_for_stored_virtual_keys = %q, want the environment_variables value", got)
	}
}

// keyrelay.providers is keyed by backend name. A misspelt name
// ("hashicorp-vault") holds options no backend ever reads: the Vault
// provider then runs on its defaults (mount "secret", no namespace) and
// keys land somewhere else than the file says, with nothing reported.
// Like every other unknown key in the keyrelay section, it must be
// reported as a warning naming its path.
func TestAuditUnknownProviderSectionWarns(t *testing.T) {
	const yaml = `
general_settings:
  key_management_system: hashicorp_vault
keyrelay:
  providers:
    hashicorp-vault: {mount: kv-prod, namespace: admin/gateway}
    local: {path: ./data/secrets}
`
	_, warnings := mustParse(t, yaml, noEnv)
	if len(warnings) != 1 || !strings.Contains(warnings[0], "keyrelay.providers.hashicorp-vault") ||
		!strings.Contains(warnings[0], "hashicorp_vault") {
		t.Fatalf("warnings = %q; want one for keyrelay.providers.hashicorp-vault suggesting hashicorp_vault", warnings)
	}
	if strings.Contains(warnings[0], "kv-prod") || strings.Contains(warnings[0], "admin/gateway") {
		t.Errorf("the warning echoes option values: %q", warnings[0])
	}
}

// Values of environment_variables may be credentials: an error about a
// setting that reads one names the variable, never its value.
func TestAuditEnvironmentVariablesNeverEchoed(t *testing.T) {
	const sentinel = "SENTINEL-hvs.4f2c9e"
	yaml := "environment_variables:\n  HCP_VAULT_TOKEN: " + sentinel + "\n" +
		"keyrelay:\n  worker:\n    concurrency: os.environ/HCP_VAULT_TOKEN\n"
	c, warnings, err := Parse([]byte(yaml), noEnv)
	if err == nil || c != nil {
		t.Fatalf("Parse accepted a token as a number: %v", err)
	}
	if strings.Contains(err.Error(), sentinel) || strings.Contains(strings.Join(warnings, "\n"), sentinel) {
		t.Fatalf("the value leaked: %v %q", err, warnings)
	}
	if !strings.Contains(err.Error(), "keyrelay.worker.concurrency") || !strings.Contains(err.Error(), "HCP_VAULT_TOKEN") {
		t.Errorf("error %q does not name the setting and the variable", err)
	}
}
