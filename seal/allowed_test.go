package seal_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// movingKMS is a KMS whose key id new data keys are wrapped under can be
// moved to another key (an AWS KMS key_id alias retargeted to a new key):
// each key id has its own AES key; Unwrap uses the key the value names.
type movingKMS struct {
	mu      sync.Mutex
	current string
	keys    map[string]cipher.AEAD
}

func newMovingKMS(kids ...string) *movingKMS {
	m := &movingKMS{current: kids[0], keys: map[string]cipher.AEAD{}}
	for _, kid := range kids {
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		b, _ := aes.NewCipher(k)
		m.keys[kid], _ = cipher.NewGCM(b)
	}
	return m
}

func (m *movingKMS) move(kid string) { m.mu.Lock(); m.current = kid; m.mu.Unlock() }

func (m *movingKMS) Name() string  { return "moving" }
func (m *movingKMS) Alg() string   { return "A256GCM-MOVING" }
func (m *movingKMS) KeyID() string { return "alias-keyrelay" }

func (m *movingKMS) Wrap(_ context.Context, dk []byte, wc seal.Context) (seal.Wrapped, error) {
	m.mu.Lock()
	kid := m.current
	m.mu.Unlock()
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	return seal.Wrapped{KID: kid, EDK: m.keys[kid].Seal(nonce, nonce, dk, wc.AdditionalData())}, nil
}

func (m *movingKMS) Unwrap(_ context.Context, kid string, edk []byte, wc seal.Context) ([]byte, error) {
	a, ok := m.keys[kid]
	if !ok {
		return nil, providers.NewError("moving", "Unwrap", kid, providers.Permanent, events.ErrUnknownKeyID)
	}
	if len(edk) < 28 {
		return nil, providers.NewError("moving", "Unwrap", kid, providers.Permanent, events.ErrOpenFailed)
	}
	pt, err := a.Open(nil, edk[:12], edk[12:], wc.AdditionalData())
	if err != nil {
		return nil, providers.NewError("moving", "Unwrap", kid, providers.Permanent, events.ErrOpenFailed)
	}
	return pt, nil
}

func (m *movingKMS) Classify(err error) seal.Class {
	c := seal.ClassifyProviderError(err)
	c.Refused = errors.Is(err, events.ErrOpenFailed)
	return c
}

// A Sealer limited to some key ids (allowed_key_arns) must not produce
// values that it, and every worker with the same configuration, refuses
// to open: after the sealing key moved to a key outside the list, Seal
// and Rewrap fail with a clear permanent error instead of publishing
// events that are dead-lettered everywhere, or rewriting every ledger
// entry into a value no worker opens.
func TestAuditSealRefusesKeyOutsideAllowed(t *testing.T) {
	ctx := context.Background()
	kms := newMovingKMS("key-old", "key-new")
	s, err := seal.New(kms, seal.Config{AllowedKeyIDs: []string{"key-old"}})
	if err != nil {
		t.Fatal(err)
	}
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 5}
	old, err := s.Seal(ctx, []byte("sk-audit-sentinel"), b)
	if err != nil {
		t.Fatal(err)
	}
	kms.move("key-new")

	t.Run("Rewrap", func(t *testing.T) {
		out, _, err := s.Rewrap(ctx, old, b)
		if err == nil {
			_, oerr := s.Open(ctx, out, b)
			t.Fatalf("Rewrap moved the value to %s, which the same sealer refuses to open: %v", out.KID, oerr)
		}
		if !errors.Is(err, events.ErrUnknownKeyID) || providers.IsRetryable(err) {
			t.Fatalf("Rewrap error: want a permanent ErrUnknownKeyID, got %v", err)
		}
	})
	t.Run("Seal", func(t *testing.T) {
		s.Purge() // the data key made under key-old is gone: the next one is wrapped by key-new
		b2 := events.Binding{TeamID: "team-a", KeyID: "key-2", Generation: 1}
		sv, err := s.Seal(ctx, []byte("sk-audit-sentinel"), b2)
		if err == nil {
			_, oerr := s.Open(ctx, sv, b2)
			t.Fatalf("Seal produced a %s value the same sealer refuses to open: %v", sv.KID, oerr)
		}
		if !errors.Is(err, events.ErrUnknownKeyID) || providers.IsRetryable(err) {
			t.Fatalf("Seal error: want a permanent ErrUnknownKeyID, got %v", err)
		}
	})
}

// No data key seals more than DataKeyMaxUses values, however many Seals
// of one team run at once.
func TestAuditDataKeyMaxUsesConcurrent(t *testing.T) {
	ctx := context.Background()
	s, err := seal.New(newMovingKMS("key-1"), seal.Config{DataKeyMaxUses: 7})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	uses := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sv, err := s.Seal(ctx, []byte("v"), events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			uses[string(sv.EDK)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, n := range uses {
		if n > 7 {
			t.Fatalf("a data key sealed %d values, more than 7", n)
		}
	}
	if len(uses) < 400/7 {
		t.Fatalf("%d data keys for 400 values", len(uses))
	}
}
