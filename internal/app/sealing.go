package app

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers/aws/kms"
	gcpkms "github.com/keyrelay/keyrelay/providers/google/kms"
	"github.com/keyrelay/keyrelay/settings"
)

// Sealing is how this process seals new values and opens sealed ones.
type Sealing struct {
	// Opener opens values sealed with the keyring or, when configured, with
	// KMS-wrapped data keys.
	Opener events.Opener
	// Sealer seals new values: with KMS when keyrelay.sealing.kms.key_id is
	// set, otherwise with the keyring's active key.
	Sealer events.Sealer
}

// LoadSealing builds the process's Sealing from keyrelay.sealing. The
// keyring file is required unless a KMS is configured; with createKeyring it
// is generated when missing (the embedded default).
func LoadSealing(ctx context.Context, c *settings.Config, createKeyring bool, log *zap.Logger) (*Sealing, error) {
	sc := c.Keyrelay.Sealing
	var openers events.Multi
	var sealer events.Sealer
	_, statErr := os.Stat(sc.KeyringFile)
	if (len(sc.KMS) == 0 && len(sc.GCPKMS) == 0) || statErr == nil || createKeyring {
		kr, err := LoadKeyring(c, createKeyring, log)
		if err != nil {
			return nil, err
		}
		openers, sealer = append(openers, kr), kr
	} else if !errors.Is(statErr, os.ErrNotExist) {
		return nil, fmt.Errorf("keyring: %w", statErr)
	}
	if len(sc.KMS) > 0 {
		ks, err := kms.New(ctx, sc.KMS, c.Env)
		if err != nil {
			return nil, fmt.Errorf("sealing.kms: %w", err)
		}
		openers = append(openers, ks)
		if ks.KeyID() != "" {
			sealer = ks
		}
		log.Info("KMS-wrapped data keys enabled", zap.Bool("seals_with_kms", ks.KeyID() != ""))
	}
	if len(sc.GCPKMS) > 0 {
		gs, err := gcpkms.New(ctx, sc.GCPKMS, c.Env)
		if err != nil {
			return nil, fmt.Errorf("sealing.gcp_kms: %w", err)
		}
		openers = append(openers, gs)
		if gs.KeyID() != "" {
			if sc.KMS["key_id"] != "" {
				return nil, errors.New("sealing: set kms.key_id or gcp_kms.key_name, not both")
			}
			sealer = gs
		}
		log.Info("Cloud KMS-wrapped data keys enabled", zap.Bool("seals_with_gcp_kms", gs.KeyID() != ""))
	}
	if sealer == nil {
		sealer = noSealer{}
	}
	return &Sealing{Opener: openers, Sealer: sealer}, nil
}

type noSealer struct{}

func (noSealer) Seal(context.Context, []byte, events.Binding) (*events.SealedValue, error) {
	return nil, errors.New("seal: no keyring and no keyrelay.sealing.kms.key_id: this process can only open values")
}

// DecryptLiteLLMEnv does what LiteLLM does at start when USE_AWS_KMS is
// "True": it decrypts LITELLM_SECRET_AWS_KMS_* variables and aws_kms/
// values with AWS KMS, and makes the results visible through c.Getenv, so
// providers reading LiteLLM's variables (HCP_VAULT_TOKEN, ...) see the
// plaintext. The process environment itself is not changed.
func DecryptLiteLLMEnv(ctx context.Context, c *settings.Config, log *zap.Logger) error {
	if !kms.EnvEnabled(os.Getenv) {
		return nil
	}
	client, err := kms.NewClient(ctx, c.Keyrelay.Sealing.KMS, c.Env)
	if err != nil {
		return fmt.Errorf("USE_AWS_KMS: %w", err)
	}
	dec, err := kms.NewDecrypter(client, "").DecryptEnv(ctx, os.Environ())
	if err != nil {
		return fmt.Errorf("USE_AWS_KMS: %w", err)
	}
	base := c.Getenv
	if base == nil {
		base = os.Getenv
	}
	c.Getenv = func(name string) string {
		if v, ok := dec[name]; ok {
			return v
		}
		return base(name)
	}
	log.Info("decrypted LiteLLM's KMS-encrypted environment variables", zap.Int("count", len(dec)))
	return nil
}
