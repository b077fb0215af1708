package app

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers/aws/kms"
	azkeys "github.com/keyrelay/keyrelay/providers/azure/keyvault/keys"
	gcpkms "github.com/keyrelay/keyrelay/providers/google/kms"
	"github.com/keyrelay/keyrelay/providers/vault/transit"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/settings"
)

// Sealing is how this process seals new values and opens sealed ones.
type Sealing struct {
	// Opener opens values sealed with the keyring or, when configured, with
	// KMS-wrapped data keys.
	Opener events.Opener
	// Sealer seals new values: with the key wrapper whose sealing key is
	// set (kms.key_id, gcp_kms.key_name, vault_transit.key_name,
	// azure_keys.key_name), otherwise with the keyring's active key.
	Sealer events.Sealer
}

// sealingWrapper is one KMS that can seal and open values, configured
// under keyrelay.sealing.<Key>.
type sealingWrapper struct {
	Key  string
	Opts map[string]string
	New  func(ctx context.Context, opts map[string]string, getenv func(string) string) (*seal.Sealer, error)
}

func sealingWrappers(sc settings.SealingConfig) []sealingWrapper {
	return []sealingWrapper{
		{"kms", sc.KMS, kms.New},
		{"gcp_kms", sc.GCPKMS, gcpkms.New},
		{"vault_transit", sc.VaultTransit, transit.New},
		{"azure_keys", sc.AzureKeys, azkeys.New},
	}
}

// LoadSealing builds the process's Sealing from keyrelay.sealing. The
// keyring file is required unless a KMS is configured; with createKeyring it
// is generated when missing (the embedded default). Every configured key
// wrapper opens its values; the one whose sealing key is set seals.
func LoadSealing(ctx context.Context, c *settings.Config, createKeyring bool, log *zap.Logger) (*Sealing, error) {
	sc := c.Keyrelay.Sealing
	var openers events.Multi
	var sealer events.Sealer
	wrappers := sealingWrappers(sc)
	anyWrapper := false
	for _, w := range wrappers {
		anyWrapper = anyWrapper || len(w.Opts) > 0
	}
	_, statErr := os.Stat(sc.KeyringFile)
	if !anyWrapper || statErr == nil || createKeyring {
		kr, err := LoadKeyring(c, createKeyring, log)
		if err != nil {
			return nil, err
		}
		openers, sealer = append(openers, kr), kr
	} else if !errors.Is(statErr, os.ErrNotExist) {
		return nil, fmt.Errorf("keyring: %w", statErr)
	}
	sealedBy := ""
	for _, w := range wrappers {
		if len(w.Opts) == 0 {
			continue
		}
		s, err := w.New(ctx, w.Opts, c.Env)
		if err != nil {
			return nil, fmt.Errorf("sealing.%s: %w", w.Key, err)
		}
		openers = append(openers, s)
		if s.KeyID() != "" {
			if sealedBy != "" {
				return nil, fmt.Errorf("sealing: both %s and %s have a sealing key; set one", sealedBy, w.Key)
			}
			sealedBy, sealer = w.Key, s
		}
		log.Info("KMS-wrapped data keys enabled", zap.String("wrapper", s.Wrapper().Name()), zap.String("alg", s.Alg()),
			zap.Bool("seals", s.KeyID() != ""))
	}
	if sealer == nil {
		sealer = noSealer{}
	}
	return &Sealing{Opener: openers, Sealer: sealer}, nil
}

// Collector returns one Prometheus collector of the configured key
// wrappers' sealers (keyrelay_seal_*), to register with the process's
// registry, or nil when no wrapper is configured.
func (s *Sealing) Collector() prometheus.Collector {
	var ss []*seal.Sealer
	if m, ok := s.Opener.(events.Multi); ok {
		for _, o := range m {
			if sealer, ok := o.(*seal.Sealer); ok {
				ss = append(ss, sealer)
			}
		}
	}
	if len(ss) == 0 {
		return nil
	}
	return seal.CollectorOf(ss...)
}

type noSealer struct{}

func (noSealer) Seal(context.Context, []byte, events.Binding) (*events.SealedValue, error) {
	return nil, errors.New("seal: no keyring and no sealing key (keyrelay.sealing.<kms|gcp_kms|vault_transit|azure_keys>): this process can only open values")
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
