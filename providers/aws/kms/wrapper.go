package kms

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/seal"
)

// Option keys New reads, next to the Sealer's (seal.FromOptions:
// data_key_ttl, ...) and the AWS connection options of
// providers/aws/awsconfig, in keyrelay.sealing.kms.
const (
	// OptionKeyID is the KMS key new data keys are generated under: a key
	// id, key ARN, alias name ("alias/keyrelay") or alias ARN. Empty: the
	// Sealer only opens. Rotation: point it at a new key and list the old
	// one in allowed_key_arns (or leave that empty); values name the ARN
	// that wrapped them, so they keep opening.
	OptionKeyID = "key_id"
	// OptionAllowedKeyARNs, comma-separated key ARNs, are the only keys
	// whose values open (seal.Config.AllowedKeyIDs). Default: any key KMS
	// lets this process use.
	OptionAllowedKeyARNs = "allowed_key_arns"
)

// Wrapper wraps data keys with AWS KMS (events.AlgA256GCMKMS values): the
// kid of a value is the ARN of the KMS key, the edk its CiphertextBlob,
// and the encryption context {"keyrelay:alg": "A256GCM-KMS",
// "keyrelay:team_id": team} (seal.Context.EncryptionContext), exactly as
// before the envelope sealer existed. New data keys come from
// GenerateDataKey (so publishers need kms:GenerateDataKey, as they always
// did); Rewrap uses Encrypt.
type Wrapper struct {
	api   API
	keyID string
}

var (
	_ seal.Wrapper   = (*Wrapper)(nil)
	_ seal.Generator = (*Wrapper)(nil)
)

// NewWrapper returns a Wrapper calling api, sealing under keyID ("" for
// open only).
func NewWrapper(api API, keyID string) (*Wrapper, error) {
	if api == nil {
		return nil, errors.New("aws_kms: no KMS client")
	}
	if keyID != "" {
		if err := checkKeyRef(keyID, true); err != nil {
			return nil, fmt.Errorf("aws_kms config: KeyID (%s): %w", OptionKeyID, err)
		}
	}
	return &Wrapper{api: api, keyID: keyID}, nil
}

// NewSealer returns the envelope sealer over a Wrapper for api and keyID.
func NewSealer(api API, keyID string, cfg seal.Config) (*seal.Sealer, error) {
	w, err := NewWrapper(api, keyID)
	if err != nil {
		return nil, err
	}
	for i, arn := range cfg.AllowedKeyIDs {
		if !strings.HasPrefix(arn, "arn:") || !strings.Contains(arn, ":key/") {
			return nil, fmt.Errorf("aws_kms config: AllowedKeyARNs[%d] (%s): must be a key ARN (arn:PARTITION:kms:REGION:ACCOUNT:key/ID)", i, OptionAllowedKeyARNs)
		} else if err := checkKeyRef(arn, false); err != nil {
			return nil, fmt.Errorf("aws_kms config: AllowedKeyARNs[%d] (%s): %w", i, OptionAllowedKeyARNs, err)
		}
	}
	return seal.New(w, cfg)
}

// New builds a Sealer from one options map: "key_id", "allowed_key_arns",
// the Sealer's options (seal.FromOptions) and the AWS connection options
// of NewClient. getenv nil means os.Getenv.
func New(ctx context.Context, opts map[string]string, getenv func(string) string) (*seal.Sealer, error) {
	cfg, err := seal.FromOptions(opts, OptionAllowedKeyARNs)
	if err != nil {
		return nil, fmt.Errorf("aws_kms config: %w", err)
	}
	client, err := NewClient(ctx, opts, getenv)
	if err != nil {
		return nil, err
	}
	return NewSealer(client, strings.TrimSpace(opts[OptionKeyID]), cfg)
}

// Name implements seal.Wrapper.
func (w *Wrapper) Name() string { return Provider }

// Alg implements seal.Wrapper: events.AlgA256GCMKMS.
func (w *Wrapper) Alg() string { return events.AlgA256GCMKMS }

// KeyID implements seal.Wrapper: the configured key_id.
func (w *Wrapper) KeyID() string { return w.keyID }

// Generate implements seal.Generator with GenerateDataKey (AES_256).
func (w *Wrapper) Generate(ctx context.Context, wc seal.Context) ([]byte, seal.Wrapped, error) {
	out, err := w.api.GenerateDataKey(ctx, &awskms.GenerateDataKeyInput{
		KeyId:             aws.String(w.keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: wc.EncryptionContext(),
	})
	if err != nil {
		return nil, seal.Wrapped{}, wrapErr("GenerateDataKey", w.keyID, err)
	}
	return out.Plaintext, seal.Wrapped{KID: aws.ToString(out.KeyId), EDK: out.CiphertextBlob}, nil
}

// Wrap implements seal.Wrapper with Encrypt.
func (w *Wrapper) Wrap(ctx context.Context, dataKey []byte, wc seal.Context) (seal.Wrapped, error) {
	out, err := w.api.Encrypt(ctx, &awskms.EncryptInput{
		KeyId:             aws.String(w.keyID),
		Plaintext:         dataKey,
		EncryptionContext: wc.EncryptionContext(),
	})
	if err != nil {
		return seal.Wrapped{}, wrapErr("Encrypt", w.keyID, err)
	}
	return seal.Wrapped{KID: aws.ToString(out.KeyId), EDK: out.CiphertextBlob}, nil
}

// Unwrap implements seal.Wrapper with Decrypt (KeyId = kid, so a value
// cannot name one key and be decrypted by another).
func (w *Wrapper) Unwrap(ctx context.Context, kid string, edk []byte, wc seal.Context) ([]byte, error) {
	out, err := w.api.Decrypt(ctx, &awskms.DecryptInput{
		CiphertextBlob:    edk,
		KeyId:             aws.String(kid),
		EncryptionContext: wc.EncryptionContext(),
	})
	if err != nil {
		return nil, wrapErr("Decrypt", kid, err, events.ErrOpenFailed)
	}
	return out.Plaintext, nil
}

// Classify implements seal.Wrapper: the class wrapErr gave; an
// InvalidCiphertextException or IncorrectKeyException is a refusal.
func (w *Wrapper) Classify(err error) seal.Class {
	c := seal.ClassifyProviderError(err)
	c.Refused = errors.Is(err, ErrInvalidCiphertext)
	return c
}

// checkKeyRef accepts what KMS accepts as a KeyId (ARN, key id, alias name
// or alias ARN) as far as keyrelay needs: 1 to 2048 characters from
// letters, digits and ":/_-", starting with a letter or digit. That is also
// what a sealed value's kid may hold.
func checkKeyRef(s string, aliasOK bool) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > 2048:
		return fmt.Errorf("is %d bytes, longer than 2048", len(s))
	case !aliasOK && strings.Contains(s, "alias/"):
		return errors.New("must name a key, not an alias")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnumByte(c):
		case i == 0:
			return errors.New("must start with a letter or digit")
		case c == ':' || c == '/' || c == '_' || c == '-':
		default:
			return fmt.Errorf("contains a character other than letters, digits and :/_- at byte %d", i)
		}
	}
	return nil
}
