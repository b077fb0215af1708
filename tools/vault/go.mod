module github.com/keyrelay/keyrelay/tools/vault

go 1.26

require github.com/hashicorp/vault v1.21.0

// Modules Vault v1.21.0 names that the module proxy no longer serves at
// those paths; these forks are API-compatible.
replace github.com/99designs/keyring => github.com/Jeffail/keyring v1.2.3

replace github.com/ma314smith/signedxml v1.1.1 => github.com/moov-io/signedxml v1.1.1
