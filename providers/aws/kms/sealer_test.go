package kms

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// Seal with one Sealer (the gateway), open with another (a worker), with
// the value travelling inside a real event.
func TestSealOpenRoundTrip(t *testing.T) {
	env := startKMS(t)
	for _, keyID := range []string{env.alias, env.keyARN, "arn:aws:kms:us-east-1:111122223333:" + env.alias} {
		t.Run(keyID, func(t *testing.T) {
			sealer := testSealer(t, env.client, Config{KeyID: keyID}, nil)
			opener := testSealer(t, env.client, Config{}, nil)
			for name, value := range map[string][]byte{
				"key":     []byte("sk-1234567890abcdef"),
				"empty":   {},
				"unicode": []byte("sk-ü-秘密-🔑"),
				"max":     bytes.Repeat([]byte{0xff}, events.MaxValueBytes),
			} {
				t.Run(name, func(t *testing.T) {
					ev, err := events.NewKeyEvent(bg, sealer, events.KeyCreated, "team-a", "key-1", 42, value, events.KeyData{})
					if err != nil {
						t.Fatal(err)
					}
					raw, err := ev.Encode()
					if err != nil {
						t.Fatal(err)
					}
					if err := events.ValidateSchema(events.SchemaEvent, raw); err != nil {
						t.Errorf("schema: %v", err)
					}
					if len(value) > 8 && bytes.Contains(raw, value) {
						t.Error("the event contains the value")
					}
					got, err := events.Decode(raw)
					if err != nil {
						t.Fatal(err)
					}
					d, err := got.KeyData()
					if err != nil {
						t.Fatal(err)
					}
					sv := d.Value
					if sv.Alg != events.AlgA256GCMKMS || sv.KID != env.keyARN || len(sv.EDK) == 0 || len(sv.Nonce) != 12 {
						t.Errorf("sealed %s edk=%dB, want A256GCM-KMS under %s", sv, len(sv.EDK), env.keyARN)
					}
					pt, err := opener.Open(bg, sv, events.BindingOf(got))
					if err != nil {
						t.Fatalf("Open: %v", err)
					}
					if !bytes.Equal(pt, value) {
						t.Error("Open returned another value")
					}
				})
			}
		})
	}
}

// A value opens only for its own event; tampering and foreign keys fail
// with permanent errors, KMS's InvalidCiphertextException among them.
func TestOpenFailures(t *testing.T) {
	env := startKMS(t)
	other := env.srv.CreateKey(t, "")
	sealer := testSealer(t, env.client, Config{KeyID: env.alias}, nil)
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 5}
	sv, err := sealer.Seal(bg, []byte(sentinel), b)
	if err != nil {
		t.Fatal(err)
	}
	// A warm opener has this edk cached for team-a; a cold one asks KMS.
	warm := testSealer(t, env.client, Config{}, nil)
	if _, err := warm.Open(bg, sv, b); err != nil {
		t.Fatal(err)
	}
	change := func(f func(*events.SealedValue)) *events.SealedValue {
		c := *sv
		c.EDK, c.Nonce, c.Ciphertext = bytes.Clone(sv.EDK), bytes.Clone(sv.Nonce), bytes.Clone(sv.Ciphertext)
		f(&c)
		return &c
	}
	tests := []struct {
		name string
		sv   *events.SealedValue
		b    events.Binding
		cfg  Config
		// code is the KMS error code expected ("" when KMS unwraps fine and
		// the AAD refuses, or KMS is not asked).
		code string
		is   []error
	}{
		{name: "another generation", sv: sv, b: events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 6}, is: []error{events.ErrOpenFailed}},
		{name: "generation removed", sv: sv, b: events.Binding{TeamID: "team-a", KeyID: "key-1"}, is: []error{events.ErrOpenFailed}},
		{name: "another key of the team", sv: sv, b: events.Binding{TeamID: "team-a", KeyID: "key-2", Generation: 5}, is: []error{events.ErrOpenFailed}},
		{name: "another team (KMS refuses the context)", sv: sv, b: events.Binding{TeamID: "team-b", KeyID: "key-1", Generation: 5},
			code: "InvalidCiphertextException", is: []error{events.ErrOpenFailed, ErrInvalidCiphertext}},
		{name: "tampered edk", sv: change(func(s *events.SealedValue) { s.EDK = flip(s.EDK, len(s.EDK)-10) }), b: b,
			code: "InvalidCiphertextException", is: []error{events.ErrOpenFailed, ErrInvalidCiphertext}},
		{name: "truncated edk", sv: change(func(s *events.SealedValue) { s.EDK = s.EDK[:len(s.EDK)/2] }), b: b,
			code: "InvalidCiphertextException", is: []error{events.ErrOpenFailed, ErrInvalidCiphertext}},
		{name: "tampered ct", sv: change(func(s *events.SealedValue) { s.Ciphertext = flip(s.Ciphertext, 0) }), b: b, is: []error{events.ErrOpenFailed}},
		{name: "tampered tag", sv: change(func(s *events.SealedValue) { s.Ciphertext = flip(s.Ciphertext, len(s.Ciphertext)-1) }), b: b, is: []error{events.ErrOpenFailed}},
		{name: "tampered nonce", sv: change(func(s *events.SealedValue) { s.Nonce = flip(s.Nonce, 3) }), b: b, is: []error{events.ErrOpenFailed}},
		{name: "kid relabelled to another key (wrong key)", sv: change(func(s *events.SealedValue) { s.KID = other }), b: b,
			code: "InvalidCiphertextException", is: []error{events.ErrOpenFailed, ErrInvalidCiphertext}},
		{name: "kid of a key that does not exist", sv: change(func(s *events.SealedValue) {
			s.KID = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000"
		}), b: b, code: "NotFoundException", is: []error{ErrKeyUnusable}},
		{name: "key not in allowed_key_arns", sv: sv, b: b, cfg: Config{AllowedKeyARNs: []string{other}}, is: []error{events.ErrUnknownKeyID}},
		{name: "local keyring value", sv: &events.SealedValue{Alg: events.AlgA256GCM, KID: "k1", Nonce: make([]byte, 12), Ciphertext: make([]byte, 20)}, b: b,
			is: []error{events.ErrUnsupportedAlg}},
		{name: "plaintext value", sv: events.PlaintextValue([]byte(sentinel)), b: b, is: []error{events.ErrUnsupportedAlg}},
		{name: "malformed (no edk)", sv: change(func(s *events.SealedValue) { s.EDK = nil }), b: b, is: []error{events.ErrInvalid}},
		{name: "invalid binding", sv: sv, b: events.Binding{TeamID: "team.a"}, is: []error{events.ErrInvalid}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, which := range []string{"cold", "warm"} {
				api := &countingAPI{API: env.client}
				opener := testSealer(t, api, tc.cfg, nil)
				if which == "warm" {
					if len(tc.cfg.AllowedKeyARNs) > 0 {
						continue
					}
					opener = warm
				}
				pt, err := opener.Open(bg, tc.sv, tc.b)
				if err == nil {
					t.Fatalf("%s: Open succeeded (%d bytes)", which, len(pt))
				}
				for _, want := range tc.is {
					if !errors.Is(err, want) {
						t.Errorf("%s: error %v is not %v", which, err, want)
					}
				}
				if Code(err) != tc.code {
					t.Errorf("%s: Code = %q, want %q (%v)", which, Code(err), tc.code, err)
				}
				if providers.IsRetryable(err) {
					t.Errorf("%s: error %v is retryable", which, err)
				}
				if tc.code != "" {
					var pe *providers.Error
					if !errors.As(err, &pe) || pe.Kind != providers.Permanent || pe.Provider != Provider || pe.Op != "Decrypt" {
						t.Errorf("%s: error %v is not a permanent aws_kms Decrypt *providers.Error", which, err)
					}
				}
				if errors.Is(tc.is[0], events.ErrUnsupportedAlg) && errors.Is(err, events.ErrOpenFailed) {
					t.Errorf("%s: an unsupported alg is reported as a failed authentication", which)
				}
				if which == "cold" && (errors.Is(err, events.ErrUnknownKeyID) || errors.Is(err, events.ErrUnsupportedAlg) || errors.Is(err, events.ErrInvalid)) {
					if n := api.decrypt.Load(); n != 0 {
						t.Errorf("%d Decrypt calls for a value refused up front", n)
					}
				}
				assertClean(t, err, sv.EDK, sv.Ciphertext)
			}
		})
	}
}

// Disabled and unknown keys fail sealing and opening permanently.
func TestUnusableKeys(t *testing.T) {
	env := startKMS(t)
	arn := env.srv.CreateKey(t, "alias/soon-disabled")
	sealer := testSealer(t, env.client, Config{KeyID: "alias/soon-disabled"}, nil)
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, err := sealer.Seal(bg, []byte(sentinel), b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.client.DisableKey(bg, &awskms.DisableKeyInput{KeyId: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	sealer.Purge()
	tests := map[string]func() error{
		"seal under a disabled key": func() error { _, err := sealer.Seal(bg, []byte(sentinel), b); return err },
		"open under a disabled key": func() error { _, err := testSealer(t, env.client, Config{}, nil).Open(bg, sv, b); return err },
		"seal under a missing alias": func() error {
			_, err := testSealer(t, env.client, Config{KeyID: "alias/missing"}, nil).Seal(bg, []byte(sentinel), b)
			return err
		},
	}
	for name, f := range tests {
		t.Run(name, func(t *testing.T) {
			err := f()
			if err == nil {
				t.Fatal("succeeded")
			}
			if !errors.Is(err, ErrKeyUnusable) || providers.IsRetryable(err) {
				t.Errorf("error %v (code %q) is not a permanent ErrKeyUnusable", err, Code(err))
			}
			assertClean(t, err)
		})
	}
	_, err = testSealer(t, env.client, Config{}, nil).Seal(bg, []byte(sentinel), b)
	if !errors.Is(err, ErrNoKey) || providers.IsRetryable(err) {
		t.Errorf("Seal without a key = %v, want ErrNoKey", err)
	}
}

// One GenerateDataKey serves many seals of a team within the TTL and the
// use limit; one Decrypt serves many opens of one edk.
func TestDataKeyCaching(t *testing.T) {
	env := startKMS(t)
	b := func(team string, gen uint64) events.Binding {
		return events.Binding{TeamID: team, KeyID: fmt.Sprintf("key-%d", gen), Generation: gen}
	}
	t.Run("seal: one GenerateDataKey per team within the TTL", func(t *testing.T) {
		clock := newClock()
		api := &countingAPI{API: env.client}
		s := testSealer(t, api, Config{KeyID: env.alias, DataKeyTTL: time.Minute}, clock)
		var edks [][]byte
		for i := 0; i < 20; i++ {
			sv, err := s.Seal(bg, []byte("sk"), b("team-a", uint64(i+1)))
			if err != nil {
				t.Fatal(err)
			}
			edks = append(edks, sv.EDK)
		}
		if n := api.generate.Load(); n != 1 {
			t.Errorf("%d GenerateDataKey calls for 20 seals, want 1", n)
		}
		for _, e := range edks[1:] {
			if !bytes.Equal(e, edks[0]) {
				t.Fatal("seals within the TTL used different data keys")
			}
		}
		if _, err := s.Seal(bg, []byte("sk"), b("team-b", 1)); err != nil {
			t.Fatal(err)
		}
		if n := api.generate.Load(); n != 2 {
			t.Errorf("%d GenerateDataKey calls after a second team, want 2", n)
		}
		clock.advance(59 * time.Second)
		_, _ = s.Seal(bg, []byte("sk"), b("team-a", 99))
		if n := api.generate.Load(); n != 2 {
			t.Errorf("%d GenerateDataKey calls before the TTL, want 2", n)
		}
		clock.advance(2 * time.Second)
		sv, err := s.Seal(bg, []byte("sk"), b("team-a", 100))
		if err != nil {
			t.Fatal(err)
		}
		if n := api.generate.Load(); n != 3 || bytes.Equal(sv.EDK, edks[0]) {
			t.Errorf("%d GenerateDataKey calls after the TTL, want 3 and a new data key", n)
		}
		if st := s.Stats(); st.GenerateDataKeyCalls != 3 || st.SealCacheHits != 20 {
			t.Errorf("Stats = %+v", st)
		}
	})
	t.Run("seal: max uses", func(t *testing.T) {
		api := &countingAPI{API: env.client}
		s := testSealer(t, api, Config{KeyID: env.alias, DataKeyMaxUses: 3}, nil)
		for i := 0; i < 7; i++ {
			if _, err := s.Seal(bg, []byte("sk"), b("team-a", uint64(i+1))); err != nil {
				t.Fatal(err)
			}
		}
		if n := api.generate.Load(); n != 3 {
			t.Errorf("%d GenerateDataKey calls for 7 seals at 3 uses, want 3", n)
		}
		one := &countingAPI{API: env.client}
		s1 := testSealer(t, one, Config{KeyID: env.alias, DataKeyMaxUses: 1}, nil)
		for i := 0; i < 4; i++ {
			_, _ = s1.Seal(bg, []byte("sk"), b("team-a", uint64(i+1)))
		}
		if n := one.generate.Load(); n != 4 {
			t.Errorf("%d GenerateDataKey calls at 1 use, want 4", n)
		}
	})
	t.Run("seal: concurrent misses share one call", func(t *testing.T) {
		api := &countingAPI{API: env.client, gate: make(chan struct{})}
		s := testSealer(t, api, Config{KeyID: env.alias}, nil)
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Seal(bg, []byte("sk"), b("team-a", uint64(i+1)))
				errs <- err
			}()
		}
		time.Sleep(50 * time.Millisecond)
		close(api.gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := api.generate.Load(); n != 1 {
			t.Errorf("%d GenerateDataKey calls for 50 concurrent seals, want 1", n)
		}
	})
	t.Run("open: one Decrypt per edk", func(t *testing.T) {
		clock := newClock()
		sealer := testSealer(t, env.client, Config{KeyID: env.alias}, nil)
		var svs []*events.SealedValue
		for i := 0; i < 10; i++ {
			sv, err := sealer.Seal(bg, []byte(fmt.Sprintf("sk-%d", i)), b("team-a", uint64(i+1)))
			if err != nil {
				t.Fatal(err)
			}
			svs = append(svs, sv)
		}
		api := &countingAPI{API: env.client}
		opener := testSealer(t, api, Config{OpenCacheTTL: time.Minute}, clock)
		for round := 0; round < 3; round++ {
			for i, sv := range svs {
				pt, err := opener.Open(bg, sv, b("team-a", uint64(i+1)))
				if err != nil || string(pt) != fmt.Sprintf("sk-%d", i) {
					t.Fatalf("Open = %q, %v", pt, err)
				}
			}
		}
		if n := api.decrypt.Load(); n != 1 {
			t.Errorf("%d Decrypt calls for 30 opens of one edk, want 1", n)
		}
		if st := opener.Stats(); st.DecryptCalls != 1 || st.OpenCacheHits != 29 {
			t.Errorf("Stats = %+v", st)
		}
		clock.advance(61 * time.Second)
		if _, err := opener.Open(bg, svs[0], b("team-a", 1)); err != nil {
			t.Fatal(err)
		}
		if n := api.decrypt.Load(); n != 2 {
			t.Errorf("%d Decrypt calls after the open TTL, want 2", n)
		}
		// The process that sealed opens without asking KMS.
		before := sealer.Stats().DecryptCalls
		if _, err := sealer.Open(bg, svs[3], b("team-a", 4)); err != nil || sealer.Stats().DecryptCalls != before {
			t.Errorf("the sealer's own Open called Decrypt (%v)", err)
		}
	})
	t.Run("open: concurrent opens share one Decrypt", func(t *testing.T) {
		sealer := testSealer(t, env.client, Config{KeyID: env.alias}, nil)
		sv, err := sealer.Seal(bg, []byte("sk-c"), b("team-c", 1))
		if err != nil {
			t.Fatal(err)
		}
		api := &countingAPI{API: env.client, gate: make(chan struct{})}
		opener := testSealer(t, api, Config{}, nil)
		var wg sync.WaitGroup
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if pt, err := opener.Open(bg, sv, b("team-c", 1)); err != nil || string(pt) != "sk-c" {
					t.Errorf("Open = %q, %v", pt, err)
				}
			}()
		}
		time.Sleep(50 * time.Millisecond)
		close(api.gate)
		wg.Wait()
		if n := api.decrypt.Load(); n != 1 {
			t.Errorf("%d Decrypt calls for 40 concurrent opens, want 1", n)
		}
	})
	t.Run("open cache is bounded", func(t *testing.T) {
		sealer := testSealer(t, env.client, Config{KeyID: env.alias}, nil)
		api := &countingAPI{API: env.client}
		opener := testSealer(t, api, Config{OpenCacheSize: 2}, nil)
		var svs []*events.SealedValue
		for i := 0; i < 3; i++ {
			sv, err := sealer.Seal(bg, []byte("sk"), b(fmt.Sprintf("team-%d", i), 1))
			if err != nil {
				t.Fatal(err)
			}
			svs = append(svs, sv)
		}
		for i, sv := range svs {
			if _, err := opener.Open(bg, sv, b(fmt.Sprintf("team-%d", i), 1)); err != nil {
				t.Fatal(err)
			}
		}
		if n := opener.openKeys.Len(); n != 2 {
			t.Errorf("open cache holds %d keys, want 2", n)
		}
		_, _ = opener.Open(bg, svs[0], b("team-0", 1)) // evicted: asks again
		if n := api.decrypt.Load(); n != 4 {
			t.Errorf("%d Decrypt calls, want 4", n)
		}
	})
}

// A caller that gives up does not fail the others waiting for the same
// data key, and gets a classified error itself.
func TestCancelledWaiter(t *testing.T) {
	env := startKMS(t)
	api := &countingAPI{API: env.client, gate: make(chan struct{})}
	s := testSealer(t, api, Config{KeyID: env.alias}, nil)
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	ctx, cancel := context.WithCancel(bg)
	first := make(chan error, 1)
	go func() { _, err := s.Seal(ctx, []byte("sk"), b); first <- err }()
	second := make(chan error, 1)
	time.Sleep(20 * time.Millisecond)
	go func() { _, err := s.Seal(bg, []byte("sk"), b); second <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	err := <-first
	if !errors.Is(err, context.Canceled) || providers.IsRetryable(err) {
		t.Errorf("cancelled Seal = %v, want context.Canceled", err)
	}
	var pe *providers.Error
	if !errors.As(err, &pe) {
		t.Errorf("cancelled Seal error %v is not a *providers.Error", err)
	}
	close(api.gate)
	if err := <-second; err != nil {
		t.Errorf("the other waiter failed: %v", err)
	}
	if n := api.generate.Load(); n != 1 {
		t.Errorf("%d GenerateDataKey calls, want 1", n)
	}
}

// events.Multi opens local-keyring and KMS values side by side; each opener
// alone refuses the other's values as unsupported.
func TestMultiOpener(t *testing.T) {
	env := startKMS(t)
	f, err := events.NewKeyringFile("k1")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := events.ParseKeyring(mustJSON(t, f))
	if err != nil {
		t.Fatal(err)
	}
	s := testSealer(t, env.client, Config{KeyID: env.alias}, nil)
	opener := testSealer(t, env.client, Config{}, nil)
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 3}
	local, err := kr.Seal(bg, []byte("sk-local"), b)
	if err != nil {
		t.Fatal(err)
	}
	remote, err := s.Seal(bg, []byte("sk-kms"), b)
	if err != nil {
		t.Fatal(err)
	}
	m := events.Multi{kr, opener}
	for sv, want := range map[*events.SealedValue]string{local: "sk-local", remote: "sk-kms"} {
		got, err := m.Open(bg, sv, b)
		if err != nil || string(got) != want {
			t.Errorf("Multi.Open(%s) = %q, %v", sv.Alg, got, err)
		}
	}
	if _, err := kr.Open(bg, remote, b); !errors.Is(err, events.ErrUnsupportedAlg) || errors.Is(err, events.ErrOpenFailed) {
		t.Errorf("Keyring.Open(kms value) = %v, want ErrUnsupportedAlg", err)
	}
	if _, err := opener.Open(bg, local, b); !errors.Is(err, events.ErrUnsupportedAlg) || errors.Is(err, events.ErrOpenFailed) {
		t.Errorf("Sealer.Open(keyring value) = %v, want ErrUnsupportedAlg", err)
	}
	if _, err := m.Open(bg, remote, events.Binding{TeamID: "team-a", KeyID: "key-2", Generation: 3}); !errors.Is(err, events.ErrOpenFailed) {
		t.Errorf("Multi.Open of a moved value = %v, want ErrOpenFailed", err)
	}
}

// New builds the Sealer from one options map through awsconfig, as the
// settings will.
func TestNewFromOptions(t *testing.T) {
	env := startKMS(t)
	opts := env.srv.Options()
	opts[OptionKeyID] = env.alias
	opts[OptionDataKeyTTL] = "1m"
	s, err := New(bg, opts, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.DataKeyTTL != time.Minute || s.KeyID() != env.alias {
		t.Errorf("config %+v", s.cfg)
	}
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, err := s.Seal(bg, []byte("sk-opts"), b)
	if err != nil {
		t.Fatal(err)
	}
	s.Purge()
	if pt, err := s.Open(bg, sv, b); err != nil || string(pt) != "sk-opts" {
		t.Errorf("Open = %q, %v", pt, err)
	}
	if s.Stats().DecryptCalls != 1 {
		t.Errorf("Purge kept the unwrapped key: %+v", s.Stats())
	}
	d, err := NewClient(bg, opts, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	v := "aws_kms/" + encryptLiteLLM(t, env.client, env.keyARN, []byte("sk-env"), nil)
	if pt, err := NewDecrypter(d, "").Decrypt(bg, v); err != nil || string(pt) != "sk-env" {
		t.Errorf("Decrypt via NewClient = %q, %v", pt, err)
	}
	opts[OptionDataKeyTTL] = "soon"
	if _, err := New(bg, opts, nil); err == nil || strings.Contains(err.Error(), "soon") {
		t.Errorf("New with a bad duration = %v", err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
