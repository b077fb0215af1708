package kvfake

import (
	"crypto/sha1" //nolint:gosec // RSA-OAEP (SHA-1) is a Key Vault algorithm the fake serves
	"hash"
)

func newSHA1() hash.Hash { return sha1.New() }
