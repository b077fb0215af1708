package seal

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// AlgKeyring is the algorithm of values whose data keys the local keyring
// wraps (KeyringWrapper).
const AlgKeyring = "A256GCM-KEYRING"

// KeyringDefaultName is the kid of KeyringWrapper values when no name is
// given.
const KeyringDefaultName = "keyring"

// KeyringWrapper wraps data keys with the local AES-256 keyring
// (AES-256-GCM under the keyring's active key): the wrapper for processes
// without a KMS, for tests and for the benchmarks. The kid of its values
// is the keyring's name, which does not change when the keyring's active
// key does; the wrapped data key records the keyring key that wrapped it:
//
//	edk = len(kid) (1 byte) || kid || nonce (12 bytes) || AES-256-GCM(key, data key, Context.AdditionalData)
type KeyringWrapper struct {
	ring *events.Keyring
	name string
}

var _ Wrapper = (*KeyringWrapper)(nil)

// NewKeyringWrapper returns a wrapper over ring named name (the values'
// kid; "" means KeyringDefaultName).
func NewKeyringWrapper(ring *events.Keyring, name string) (*KeyringWrapper, error) {
	if ring == nil {
		return nil, errors.New("keyring wrapper: no keyring")
	}
	if name == "" {
		name = KeyringDefaultName
	}
	if err := events.ValidateID("keyring name", name); err != nil {
		return nil, err
	}
	return &KeyringWrapper{ring: ring, name: name}, nil
}

// Name implements Wrapper.
func (k *KeyringWrapper) Name() string { return "keyring" }

// Alg implements Wrapper: AlgKeyring.
func (k *KeyringWrapper) Alg() string { return AlgKeyring }

// KeyID implements Wrapper: the keyring's name.
func (k *KeyringWrapper) KeyID() string { return k.name }

// Wrap implements Wrapper with the keyring's active key.
func (k *KeyringWrapper) Wrap(_ context.Context, dataKey []byte, wc Context) (Wrapped, error) {
	kid, blob, err := k.ring.WrapKey(dataKey, wc.AdditionalData())
	if err != nil {
		return Wrapped{}, providers.NewError(k.Name(), "Wrap", k.name, providers.Retryable, err)
	}
	edk := make([]byte, 0, 1+len(kid)+len(blob))
	edk = append(edk, byte(len(kid)))
	edk = append(edk, kid...)
	edk = append(edk, blob...)
	return Wrapped{KID: k.name, EDK: edk}, nil
}

// Unwrap implements Wrapper with the keyring key edk names.
func (k *KeyringWrapper) Unwrap(_ context.Context, kid string, edk []byte, wc Context) ([]byte, error) {
	if kid != k.name {
		return nil, providers.NewError(k.Name(), "Unwrap", kid, providers.Permanent,
			fmt.Errorf("kid is not this keyring (%s): %w", k.name, events.ErrUnknownKeyID))
	}
	member, blob, ok := KeyringMember(edk)
	if !ok {
		return nil, providers.NewError(k.Name(), "Unwrap", kid, providers.Permanent, fmt.Errorf("malformed wrapped key: %w", events.ErrOpenFailed))
	}
	key, err := k.ring.UnwrapKey(member, blob, wc.AdditionalData())
	if err != nil {
		return nil, providers.NewError(k.Name(), "Unwrap", kid+"/"+member, providers.Permanent, err)
	}
	return key, nil
}

// KeyringMember splits a KeyringWrapper edk into the keyring key id that
// wrapped it and the rest.
func KeyringMember(edk []byte) (member string, blob []byte, ok bool) {
	if len(edk) < 1 || len(edk) < 1+int(edk[0]) || edk[0] == 0 {
		return "", nil, false
	}
	return string(edk[1 : 1+int(edk[0])]), edk[1+int(edk[0]):], true
}

// Classify implements Wrapper: keyring failures are permanent (a key
// missing from the keyring, a wrapped key that does not authenticate),
// the latter a refusal.
func (k *KeyringWrapper) Classify(err error) Class {
	c := ClassifyProviderError(err)
	c.Refused = errors.Is(err, events.ErrOpenFailed)
	return c
}
