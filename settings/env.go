package settings

// LiteLLMEnv lists, per key_management_system name, the environment
// variables LiteLLM reads for that secret manager. keyrelay does not copy
// them into Config: providers read them through Config.Getenv (passed on as
// providers.Config.Getenv) with LiteLLM's names and meanings, so a LiteLLM
// deployment's environment works unchanged. Options in keyrelay.providers
// or in team settings override them per provider.
//
// The lists document what each provider honours (and let a "config check"
// report which are set, never their values); a provider may read more, such
// as the standard AWS, Azure and Google SDK variables.
var LiteLLMEnv = map[string][]string{
	"hashicorp_vault": {
		"HCP_VAULT_ADDR", "HCP_VAULT_TOKEN",
		"HCP_VAULT_NAMESPACE", "HCP_VAULT_LOGIN_NAMESPACE", "HCP_VAULT_SECRET_NAMESPACE",
		"HCP_VAULT_MOUNT_NAME", "HCP_VAULT_PATH_PREFIX",
		"HCP_VAULT_APPROLE_ROLE_ID", "HCP_VAULT_APPROLE_SECRET_ID", "HCP_VAULT_APPROLE_MOUNT_PATH",
		"HCP_VAULT_CLIENT_CERT", "HCP_VAULT_CLIENT_KEY", "HCP_VAULT_CERT_ROLE",
	},
	"aws_secret_manager": {
		"AWS_REGION_NAME", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ROLE_NAME", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE",
	},
	"azure_key_vault": {
		"AZURE_KEY_VAULT_URI", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID",
	},
	"google_secret_manager": {
		"GOOGLE_SECRET_MANAGER_PROJECT_ID", "GOOGLE_APPLICATION_CREDENTIALS",
	},
	"cyberark": {
		"CYBERARK_API_BASE", "CYBERARK_ACCOUNT", "CYBERARK_USERNAME", "CYBERARK_API_KEY",
		"CYBERARK_CLIENT_CERT", "CYBERARK_CLIENT_KEY", "CYBERARK_SSL_VERIFY",
	},
}
