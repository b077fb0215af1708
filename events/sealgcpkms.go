package events

// Google Cloud KMS-wrapped data keys (AlgA256GCMGCPKMS). The value is
// sealed exactly as an A256GCM-KMS value (AES-256-GCM, 12-byte random
// nonce, the same AAD with alg "A256GCM-GCPKMS"), but Cloud KMS has no
// GenerateDataKey: the sealer generates a random 32-byte data key itself
// and wraps it with Cloud KMS Encrypt, with GCPKMSAdditionalData as the
// additional authenticated data; whoever opens the value unwraps edk with
// Cloud KMS Decrypt and the same additional data. The calls to Cloud KMS
// live in providers/google/kms.

// AlgA256GCMGCPKMS is AES-256-GCM with a 96-bit random nonce under a
// random data key wrapped by Google Cloud KMS Encrypt under the CryptoKey
// whose resource name is kid
// ("projects/P/locations/L/keyRings/R/cryptoKeys/K"). edk carries the
// Cloud KMS ciphertext of the data key, encrypted with
// Binding.GCPKMSAdditionalData as additional authenticated data. The local
// keyring does not open it; providers/google/kms does.
const AlgA256GCMGCPKMS = "A256GCM-GCPKMS"

// GCPKMSAdditionalData returns the Cloud KMS additional authenticated data
// an A256GCM-GCPKMS data key for a value bound to b is wrapped and
// unwrapped with:
//
//	"keyrelay:alg=A256GCM-GCPKMS" 0x00 "keyrelay:team_id=" team_id
//
// It plays the part of the AWS encryption context
// (Binding.KMSEncryptionContext): Cloud KMS refuses to unwrap the data key
// with any other additional data, so a wrapped key copied into another
// team's event does not unwrap. Ids cannot contain NUL, so the encoding is
// unambiguous.
func (b Binding) GCPKMSAdditionalData() []byte {
	out := make([]byte, 0, 64)
	out = append(out, KMSContextAlg+"="+AlgA256GCMGCPKMS...)
	out = append(out, 0)
	out = append(out, KMSContextTeamID+"="...)
	out = append(out, b.TeamID...)
	return out
}

// NewGCPKMSDataKey builds a DataKey sealing and opening A256GCM-GCPKMS
// values from key, the 32-byte plaintext data key, and edk, the same key
// as Cloud KMS encrypted it under the CryptoKey whose resource name is
// kid. It keeps neither key nor edk: wipe key (clear(key)) after the call.
func NewGCPKMSDataKey(kid string, key, edk []byte) (*DataKey, error) {
	return newDataKey(AlgA256GCMGCPKMS, kid, key, edk)
}
