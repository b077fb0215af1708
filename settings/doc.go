// Package settings reads keyrelay's configuration from a LiteLLM
// config.yaml and resolves the secret-manager settings that apply to one
// team.
//
// The file is LiteLLM's own: keyrelay reads
// general_settings.key_management_system and
// general_settings.key_management_settings with LiteLLM's names and
// meanings, plus its own top-level "keyrelay:" section, and LiteLLM's
// environment_variables section, which LiteLLM sets into its environment
// first. LiteLLM's environment variables (HCP_VAULT_ADDR,
// AZURE_KEY_VAULT_URI, ...; see LiteLLMEnv) are read by the providers
// through Config.Getenv, which sees that section's entries over the
// process environment as LiteLLM does. A user moving from LiteLLM changes
// nothing.
//
// # Guarantees
//
//   - A LiteLLM config.yaml parses unchanged: model_list, litellm_settings,
//     router_settings and every other section, and
//     every other general_settings key, are ignored without a warning; all
//     of LiteLLM's key_management_settings fields are accepted.
//   - Nothing the file sets is lost silently: an unknown key inside
//     key_management_settings or keyrelay is reported as a warning with its
//     full dotted path (and a suggestion when it looks like a typo); so are
//     a misspelt keyrelay section, an os.environ/ reference to an unset
//     variable, and access_mode read_only with stored keys.
//   - Every setting has a documented default, exported as a Default*
//     constant; an absent key (or a null value) takes it, an explicit value,
//     even zero or false, is kept and validated. In particular an absent
//     store_virtual_keys means true and an absent
//     prefix_for_stored_virtual_keys means "litellm/".
//   - access_mode defaults to read_and_write and is enforced on writes
//     (Resolved.CanWrite), unlike LiteLLM, whose default read_only only
//     gates reads.
//   - Load, Parse and Validate return a configuration that passes Validate
//     or none at all; every error names the setting by its full YAML path
//     (a *FieldError, with the line when it comes from the file) and never
//     echoes a NATS URL, password or token.
//   - Resolve never mutates the Config and returns maps the caller owns.
//   - SecretName is deterministic and never returns a name that contains
//     "..", a control character, a backslash, an empty or "." path segment,
//     or a leading "/"; keys without an alias are named by their key id
//     instead of being skipped. A prefix not ending with "/" is followed by
//     one where a placeholder follows {prefix}, as LiteLLM joins
//     prefix_for_stored_virtual_keys and the name.
package settings
