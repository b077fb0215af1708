package kms

import (
	"regexp"
)

// Option keys New reads (keyrelay.sealing.gcp_kms).
const (
	// Sealing, next to the Sealer's own (seal.FromOptions: data_key_ttl,
	// data_key_max_uses, seal_cache_size, open_cache_ttl, open_cache_size,
	// call_timeout, max_attempts, retry_base).
	//
	// OptionKeyName is the Cloud KMS key data keys are wrapped with: a
	// CryptoKey ("projects/P/locations/L/keyRings/R/cryptoKeys/K", which
	// encrypts with its primary version: rotating the CryptoKey is the
	// rotation) or one CryptoKeyVersion of it. Empty: the Sealer only
	// opens.
	OptionKeyName = "key_name"
	// OptionAllowedKeyNames, comma-separated CryptoKey names, are the only
	// keys whose values open. Default: any key Cloud KMS lets this process
	// use.
	OptionAllowedKeyNames = "allowed_key_names"
	// Connection (the same names as providers/google/secretmanager).
	OptionEndpoint        = "endpoint"
	OptionInsecure        = "insecure"
	OptionCABundle        = "ca_bundle"
	OptionCredentialsFile = "credentials_file"
)

// EnvResourceName is LiteLLM's variable naming the CryptoKey that
// google_kms values are decrypted with.
const EnvResourceName = "GOOGLE_KMS_RESOURCE_NAME"

var (
	cryptoKeyRe  = regexp.MustCompile(`^projects/[a-z0-9][a-z0-9:_-]*/locations/[A-Za-z0-9_-]+/keyRings/[A-Za-z0-9_-]{1,63}/cryptoKeys/[A-Za-z0-9_-]{1,63}$`)
	keyVersionRe = regexp.MustCompile(`^(projects/[a-z0-9][a-z0-9:_-]*/locations/[A-Za-z0-9_-]+/keyRings/[A-Za-z0-9_-]{1,63}/cryptoKeys/[A-Za-z0-9_-]{1,63})/cryptoKeyVersions/[1-9][0-9]*$`)
)

// CryptoKeyOf returns the CryptoKey name of a CryptoKey or CryptoKeyVersion
// name, or "" when name is neither. Project ids with dots (the legacy
// "domain.com:project" form) are not supported: use the project number.
func CryptoKeyOf(name string) string {
	if cryptoKeyRe.MatchString(name) {
		return name
	}
	if m := keyVersionRe.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}
