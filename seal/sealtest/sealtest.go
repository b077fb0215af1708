// Package sealtest is the conformance suite every key wrapper passes
// against its server or emulator: round trip, wrong binding refused,
// tampered ciphertext and wrapped key refused as permanent, outages
// retried, throttling honoured, and rotation of the key-encryption key
// (new values under the newest key, old ones still open, Rewrap moving
// them to the newest).
//
// A wrapper's test calls Run with a factory and the hooks its server
// offers; hooks left nil skip their cases with the reason.
package sealtest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// Sentinel is planted in every value the suite seals; it must never appear
// in an error message.
const Sentinel = "sk-SEALTEST-7e2f9a-never-in-errors"

// Options are a wrapper's hooks into its server.
type Options struct {
	// New returns the wrapper under test, configured to seal with the
	// server's current newest key. Each call may return a new wrapper
	// over the same server (no shared cache).
	New func(t *testing.T) seal.Wrapper
	// Outage makes the next n KMS calls fail the way an outage looks from
	// the client (5xx, UNAVAILABLE, a refused connection). nil: no outage
	// can be staged.
	Outage func(t *testing.T, n int)
	// Throttle makes the next n KMS calls throttled, with retryAfter as
	// the server's hint where it sends one. nil: the server never
	// throttles.
	Throttle func(t *testing.T, n int, retryAfter time.Duration)
	// Rotate makes a new version (or a new active key) of the KEK the
	// wrapper seals with; wrappers from New after it seal with the new
	// one, and every older one still unwraps.
	Rotate func(t *testing.T)
	// Features says what the wrapper's KMS does.
	Features Features
}

// Features are what a wrapper's KMS can do, so the suite asks for no more.
type Features struct {
	// BindsContext: the KMS itself refuses to unwrap a data key under
	// another team's wrap context (AWS encryption context, additional
	// authenticated data). Without it, a value moved to another team is
	// still refused, by the value's own AES-GCM associated data.
	BindsContext bool
	// RetryAfter: throttled answers carry a hint the Sealer waits for.
	RetryAfter bool
}

var bg = context.Background()

func sealer(t *testing.T, o Options, mod ...func(*seal.Config)) *seal.Sealer {
	t.Helper()
	cfg := seal.Config{CallTimeout: 5 * time.Second, RetryBase: 5 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := seal.New(o.New(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Run runs the suite.
func Run(t *testing.T, o Options) {
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 7}
	value := []byte(Sentinel + "-value")
	noSecret := func(t *testing.T, err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), Sentinel) {
			t.Errorf("error names the value: %v", err)
		}
	}

	t.Run("RoundTrip", func(t *testing.T) {
		s := sealer(t, o)
		for i, bb := range []events.Binding{b, {TeamID: "team-b", KeyID: "key-1", Generation: 1}, {TeamID: "team-a", KeyID: "key-2"}} {
			v := append(bytes.Clone(value), byte('0'+i))
			sv, err := s.Seal(bg, v, bb)
			if err != nil {
				t.Fatal(err)
			}
			if sv.Alg != s.Alg() || len(sv.EDK) == 0 || bytes.Contains(sv.Ciphertext, v) {
				t.Fatalf("sealed value %s", sv)
			}
			if err := events.ValidateSchema(events.SchemaSealedValue, mustJSON(t, sv)); err != nil {
				t.Errorf("schema: %v", err)
			}
			for name, op := range map[string]*seal.Sealer{"same sealer": s, "fresh sealer": sealer(t, o)} {
				got, err := op.Open(bg, sv, bb)
				if err != nil || !bytes.Equal(got, v) {
					t.Fatalf("%s: Open = %q, %v", name, got, err)
				}
			}
		}
		// The data key is cached: a second value of the team makes no call.
		before := s.Stats().WrapCalls
		if _, err := s.Seal(bg, value, b); err != nil {
			t.Fatal(err)
		}
		if got := s.Stats().WrapCalls; got != before {
			t.Errorf("a cached team's Seal made %d KMS calls", got-before)
		}
		// Empty and maximal values.
		for _, v := range [][]byte{{}, bytes.Repeat([]byte{0xa5}, events.MaxValueBytes)} {
			sv, err := s.Seal(bg, v, b)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := sealer(t, o).Open(bg, sv, b); err != nil || !bytes.Equal(got, v) {
				t.Fatalf("%d-byte value: %v", len(v), err)
			}
		}
	})

	t.Run("WrongBindingRefused", func(t *testing.T) {
		s := sealer(t, o)
		sv, err := s.Seal(bg, value, b)
		if err != nil {
			t.Fatal(err)
		}
		others := map[string]events.Binding{
			"generation": {TeamID: b.TeamID, KeyID: b.KeyID, Generation: b.Generation + 1},
			"key":        {TeamID: b.TeamID, KeyID: "key-2", Generation: b.Generation},
			"team":       {TeamID: "team-b", KeyID: b.KeyID, Generation: b.Generation},
		}
		for name, ob := range others {
			t.Run(name, func(t *testing.T) {
				for sname, op := range map[string]*seal.Sealer{"same sealer": s, "fresh sealer": sealer(t, o)} {
					got, err := op.Open(bg, sv, ob)
					if err == nil {
						t.Fatalf("%s: opened for another %s (%d bytes)", sname, name, len(got))
					}
					noSecret(t, err)
					if !errors.Is(err, events.ErrOpenFailed) || providers.IsRetryable(err) {
						t.Errorf("%s: error %v: want permanent events.ErrOpenFailed", sname, err)
					}
				}
			})
		}
		if o.Features.BindsContext {
			// The KMS itself refuses the wrapped key under another team.
			w := o.New(t)
			_, err := w.Unwrap(bg, sv.KID, sv.EDK, seal.Context{Alg: sv.Alg, TeamID: "team-b"})
			if err == nil {
				t.Fatal("the KMS unwrapped a data key under another team's context")
			}
			if c := w.Classify(err); c.Kind != providers.Permanent || !c.Refused {
				t.Errorf("Classify(%v) = %+v, want permanent refusal", err, c)
			}
		}
	})

	t.Run("TamperedRefusedAsPermanent", func(t *testing.T) {
		sv, err := sealer(t, o).Seal(bg, value, b)
		if err != nil {
			t.Fatal(err)
		}
		flip := func(p []byte, i int) []byte {
			out := bytes.Clone(p)
			out[i] ^= 0x01
			return out
		}
		cases := map[string]func(*events.SealedValue){
			"ct":      func(v *events.SealedValue) { v.Ciphertext = flip(v.Ciphertext, 0) },
			"tag":     func(v *events.SealedValue) { v.Ciphertext = flip(v.Ciphertext, len(v.Ciphertext)-1) },
			"nonce":   func(v *events.SealedValue) { v.Nonce = flip(v.Nonce, 3) },
			"edk-end": func(v *events.SealedValue) { v.EDK = flip(v.EDK, len(v.EDK)-1) },
		}
		for name, mut := range cases {
			t.Run(name, func(t *testing.T) {
				tv := *sv
				mut(&tv)
				got, err := sealer(t, o).Open(bg, &tv, b)
				if err == nil {
					t.Fatalf("tampered value opened (%d bytes)", len(got))
				}
				noSecret(t, err)
				if providers.IsRetryable(err) {
					t.Errorf("retryable: %v", err)
				}
				if !errors.Is(err, events.ErrOpenFailed) && !errors.Is(err, events.ErrInvalid) {
					t.Errorf("error %v: want events.ErrOpenFailed", err)
				}
			})
		}
	})

	t.Run("OutageRetried", func(t *testing.T) {
		if o.Outage == nil {
			t.Skip("the wrapper's server cannot stage an outage (no network)")
		}
		s := sealer(t, o, func(c *seal.Config) { c.MaxAttempts = 3 })
		o.Outage(t, 2)
		sv, err := s.Seal(bg, value, b)
		if err != nil {
			t.Fatalf("Seal through a 2-call outage with 3 attempts: %v", err)
		}
		if st := s.Stats(); st.Retries < 2 {
			t.Errorf("retries %d, want 2", st.Retries)
		}
		s2 := sealer(t, o, func(c *seal.Config) { c.MaxAttempts = 3 })
		o.Outage(t, 2)
		if _, err := s2.Open(bg, sv, b); err != nil {
			t.Fatalf("Open through a 2-call outage: %v", err)
		}
		s3 := sealer(t, o, func(c *seal.Config) { c.MaxAttempts = 2 })
		o.Outage(t, 3)
		_, err = s3.Seal(bg, value, b)
		if err == nil || !providers.IsRetryable(err) {
			t.Fatalf("Seal during a longer outage: %v, want a retryable error", err)
		}
		noSecret(t, err)
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Kind != providers.Retryable {
			t.Errorf("error %v: want a retryable *providers.Error", err)
		}
		if t.Failed() {
			return
		}
		o.Outage(t, 0)
	})

	t.Run("ThrottlingHonoured", func(t *testing.T) {
		if o.Throttle == nil {
			t.Skip("the wrapper's server never throttles")
		}
		const hint = 300 * time.Millisecond
		s := sealer(t, o, func(c *seal.Config) { c.MaxAttempts = 3 })
		o.Throttle(t, 1, hint)
		start := time.Now()
		if _, err := s.Seal(bg, value, b); err != nil {
			t.Fatalf("Seal after one throttled call: %v", err)
		}
		if o.Features.RetryAfter && time.Since(start) < hint {
			t.Errorf("retried after %v, before the %v hint", time.Since(start), hint)
		}
		if s.Stats().Throttles != 1 {
			t.Errorf("throttles %d, want 1", s.Stats().Throttles)
		}
		s2 := sealer(t, o, func(c *seal.Config) { c.MaxAttempts = 2 })
		o.Throttle(t, 5, hint)
		_, err := s2.Seal(bg, value, b)
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Kind != providers.Throttled || !errors.Is(err, providers.ErrThrottled) {
			t.Fatalf("Seal while throttled: %v, want a Throttled *providers.Error", err)
		}
		if o.Features.RetryAfter && pe.RetryAfter < hint/2 {
			t.Errorf("RetryAfter %v, want the server's %v", pe.RetryAfter, hint)
		}
		o.Throttle(t, 0, 0)
	})

	t.Run("KeyRotation", func(t *testing.T) {
		if o.Rotate == nil {
			t.Skip("no rotation hook")
		}
		old, err := sealer(t, o).Seal(bg, value, b)
		if err != nil {
			t.Fatal(err)
		}
		o.Rotate(t)
		s := sealer(t, o)
		nb := events.Binding{TeamID: b.TeamID, KeyID: "key-9", Generation: 1}
		cur, err := s.Seal(bg, value, nb)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(cur.EDK, old.EDK) {
			t.Fatal("a new sealer reused the old wrapped key")
		}
		for name, sv := range map[string]*events.SealedValue{"before rotation": old, "after rotation": cur} {
			bb := b
			if sv == cur {
				bb = nb
			}
			if got, err := sealer(t, o).Open(bg, sv, bb); err != nil || !bytes.Equal(got, value) {
				t.Fatalf("%s: Open = %v", name, err)
			}
		}
		// Rewrap moves the old value's data key to the newest KEK.
		rw, changed, err := s.Rewrap(bg, old, b)
		if err != nil {
			t.Fatal(err)
		}
		if !changed || bytes.Equal(rw.EDK, old.EDK) {
			t.Fatal("Rewrap left the wrapped key as it was")
		}
		if rw.KID == old.KID && (!bytes.Equal(rw.Ciphertext, old.Ciphertext) || !bytes.Equal(rw.Nonce, old.Nonce)) {
			t.Error("Rewrap under the same kid changed the ciphertext")
		}
		if got, err := sealer(t, o).Open(bg, rw, b); err != nil || !bytes.Equal(got, value) {
			t.Fatalf("rewrapped value: Open = %v", err)
		}
		if _, err := sealer(t, o).Open(bg, rw, nb); !errors.Is(err, events.ErrOpenFailed) {
			t.Errorf("rewrapped value opened for another event: %v", err)
		}
		// A tampered value is never rewrapped.
		bad := *old
		bad.Ciphertext = bytes.Clone(bad.Ciphertext)
		bad.Ciphertext[0] ^= 1
		if _, _, err := sealer(t, o).Rewrap(bg, &bad, b); !errors.Is(err, events.ErrOpenFailed) {
			t.Errorf("Rewrap of a tampered value: %v", err)
		}
	})
}
