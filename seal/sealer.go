package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// Sealer seals event values under data keys wrapped by one Wrapper, and
// opens such values. It implements events.Sealer, events.Opener and
// events.AlgOpener; combine it with the local keyring and other Sealers as
// events.Multi{...} to open every kind. It is safe for concurrent use.
type Sealer struct {
	w       Wrapper
	cfg     Config
	allowed map[string]bool
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error

	// sealKeys: per team, the data key new values are sealed with.
	// openKeys: unwrapped data keys by (alg, kid, team, edk).
	sealKeys *cache[string]
	openKeys *cache[[sha256.Size]byte]

	st counters
}

var (
	_ events.Sealer    = (*Sealer)(nil)
	_ events.AlgOpener = (*Sealer)(nil)
)

// New returns a Sealer over w. cfg is completed with defaults and
// validated.
func New(w Wrapper, cfg Config) (*Sealer, error) {
	if w == nil {
		return nil, errors.New("seal: no key wrapper")
	}
	if !events.IsEnvelopeAlg(w.Alg()) {
		return nil, fmt.Errorf("seal: %s: %q is not an envelope algorithm", w.Name(), w.Alg())
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s config: %w", w.Name(), err)
	}
	return newSealer(w, cfg.WithDefaults(), time.Now), nil
}

func newSealer(w Wrapper, cfg Config, now func() time.Time) *Sealer {
	s := &Sealer{w: w, cfg: cfg, now: now, sleep: ctxtime.Sleep}
	if len(cfg.AllowedKeyIDs) > 0 {
		s.allowed = make(map[string]bool, len(cfg.AllowedKeyIDs))
		for _, id := range cfg.AllowedKeyIDs {
			s.allowed[id] = true
		}
	}
	load := s.loadTimeout()
	s.sealKeys = newCache[string](cfg.SealCacheSize, cfg.DataKeyTTL, cfg.DataKeyMaxUses, load, now)
	s.openKeys = newCache[[sha256.Size]byte](cfg.OpenCacheSize, cfg.OpenCacheTTL, 0, load, now)
	return s
}

// loadTimeout bounds one cache load: every attempt and the waits between.
func (s *Sealer) loadTimeout() time.Duration {
	n := time.Duration(s.cfg.MaxAttempts)
	return n*s.cfg.CallTimeout + (n-1)*(MaxRetryAfterDefault+s.cfg.RetryBase<<n)
}

// Wrapper returns the key wrapper.
func (s *Sealer) Wrapper() Wrapper { return s.w }

// KeyID returns the configured key new values are sealed under ("" for an
// open-only Sealer).
func (s *Sealer) KeyID() string { return s.w.KeyID() }

// Alg returns the algorithm of the values the Sealer seals and opens.
func (s *Sealer) Alg() string { return s.w.Alg() }

// OpensAlg reports whether Open handles alg: the wrapper's algorithm only.
func (s *Sealer) OpensAlg(alg string) bool { return alg == s.w.Alg() }

// Purge drops every cached data key, e.g. after revoking a key-encryption
// key: the next Seal makes a new data key and the next Open unwraps again.
func (s *Sealer) Purge() {
	s.sealKeys.purge()
	s.openKeys.purge()
}

// Seal encrypts plaintext under a data key for b's team, bound to b. The
// data key is 32 random bytes wrapped by the wrapper's newest key (or, for
// a Generator, made by the KMS), and seals further values of the team for
// DataKeyTTL or DataKeyMaxUses values, whichever ends first; concurrent
// Seals for a team share one KMS call.
func (s *Sealer) Seal(ctx context.Context, plaintext []byte, b events.Binding) (*events.SealedValue, error) {
	if s.w.KeyID() == "" {
		return nil, s.newError("Wrap", "", providers.Permanent, ErrNoKey, providers.ErrInvalid)
	}
	if len(plaintext) > events.MaxValueBytes {
		return nil, fmt.Errorf("seal: value is %d bytes, larger than %d", len(plaintext), events.MaxValueBytes)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	wc := Context{Alg: s.w.Alg(), TeamID: b.TeamID}
	dk, hit, err := s.sealKeys.get(ctx, b.TeamID, func(ctx context.Context) (*events.DataKey, error) {
		return s.newDataKey(ctx, wc)
	})
	if err != nil {
		s.st.sealErrors.Add(1)
		return nil, s.ctxErr("Wrap", s.w.KeyID(), err)
	}
	if hit {
		s.st.sealHits.Add(1)
	}
	sv, err := dk.Seal(plaintext, b)
	if err == nil {
		s.st.seals.Add(1)
	}
	return sv, err
}

// newDataKey makes and wraps a data key, and caches it for opening too.
func (s *Sealer) newDataKey(ctx context.Context, wc Context) (*events.DataKey, error) {
	var key []byte
	var w Wrapped
	if g, ok := s.w.(Generator); ok {
		err := s.call(ctx, "Generate", s.w.KeyID(), &s.st.wrapCalls, func(ctx context.Context) error {
			var err error
			key, w, err = g.Generate(ctx, wc)
			return err
		})
		if err != nil {
			return nil, err
		}
	} else {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, s.newError("Wrap", s.w.KeyID(), providers.Retryable, errors.New("no randomness for a data key"), providers.ErrUnavailable)
		}
		err := s.call(ctx, "Wrap", s.w.KeyID(), &s.st.wrapCalls, func(ctx context.Context) error {
			var err error
			w, err = s.w.Wrap(ctx, key, wc)
			return err
		})
		if err != nil {
			clear(key)
			return nil, err
		}
	}
	defer clear(key)
	if err := s.checkSealKID(w.KID); err != nil {
		return nil, err
	}
	dk, err := events.NewEnvelopeDataKey(wc.Alg, w.KID, key, w.EDK)
	if err != nil {
		// events' messages name sizes and the kid, never key bytes.
		return nil, s.newError("Wrap", s.w.KeyID(), providers.Permanent, fmt.Errorf("the KMS returned an unusable data key: %w", err), providers.ErrInvalid)
	}
	// This process opens what it seals without asking the KMS.
	s.openKeys.put(openKey(wc, w.KID, w.EDK), dk)
	return dk, nil
}

// Open unwraps sv's data key (kid sv.KID, the wrap context of b's team)
// and opens sv bound to b. Unwrapped data keys are cached by (kid, team,
// edk) for OpenCacheTTL; concurrent Opens of one edk share one KMS call.
//
// Errors: events.ErrUnsupportedAlg for values of another algorithm;
// events.ErrUnknownKeyID for a kid outside AllowedKeyIDs; a permanent
// *providers.Error matching events.ErrOpenFailed for tampered values,
// another key, or a value moved to another event; other KMS failures are
// *providers.Error, retryable, throttled or permanent.
func (s *Sealer) Open(ctx context.Context, sv *events.SealedValue, b events.Binding) ([]byte, error) {
	dk, err := s.dataKeyOf(ctx, sv, b)
	if err != nil {
		return nil, err
	}
	pt, err := dk.Open(sv, b)
	if errors.Is(err, events.ErrOpenFailed) {
		// The data key is the one the KMS unwrapped for this kid and team:
		// a value that fails AES-GCM authentication under it is tampered
		// or bound to another event, however often it is tried.
		s.st.openErrors.Add(1)
		return nil, s.newError("Open", sv.KID, providers.Permanent,
			errors.New("the sealed value failed AES-GCM authentication (tampered, or bound to another key or generation)"),
			events.ErrOpenFailed, providers.ErrInvalid)
	}
	if err == nil {
		s.st.opens.Add(1)
	}
	return pt, err
}

// dataKeyOf checks sv and b and returns sv's unwrapped data key.
func (s *Sealer) dataKeyOf(ctx context.Context, sv *events.SealedValue, b events.Binding) (*events.DataKey, error) {
	if sv == nil {
		return nil, errors.New("open: no sealed value")
	}
	wc := Context{Alg: sv.Alg, TeamID: b.TeamID}
	ok := openKey(wc, sv.KID, sv.EDK)
	if s.OpensAlg(sv.Alg) && (s.allowed == nil || s.allowed[sv.KID]) {
		// A cached key: events.DataKey.Open checks sv and b itself.
		if dk := s.openKeys.peek(ok); dk != nil {
			s.st.openHits.Add(1)
			return dk, nil
		}
	}
	if err := sv.Validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if !s.OpensAlg(sv.Alg) {
		return nil, fmt.Errorf("open: %s values are not opened by %s: %w", sv.Alg, s.w.Name(), events.ErrUnsupportedAlg)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if s.allowed != nil && !s.allowed[sv.KID] {
		return nil, fmt.Errorf("open: %s key %s is not allowed: %w", s.w.Name(), sv.KID, events.ErrUnknownKeyID)
	}
	kid, edk := sv.KID, bytes.Clone(sv.EDK)
	dk, hit, err := s.openKeys.get(ctx, ok, func(ctx context.Context) (*events.DataKey, error) {
		return s.unwrap(ctx, kid, edk, wc)
	})
	if err != nil {
		s.st.openErrors.Add(1)
		return nil, s.ctxErr("Unwrap", kid, err)
	}
	if hit {
		s.st.openHits.Add(1)
	}
	return dk, nil
}

func (s *Sealer) unwrap(ctx context.Context, kid string, edk []byte, wc Context) (*events.DataKey, error) {
	var key []byte
	err := s.call(ctx, "Unwrap", kid, &s.st.unwrapCalls, func(ctx context.Context) error {
		var err error
		key, err = s.w.Unwrap(ctx, kid, edk, wc)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(key)
	dk, err := events.NewEnvelopeDataKey(wc.Alg, kid, key, edk)
	if err != nil {
		return nil, s.newError("Unwrap", kid, providers.Permanent, fmt.Errorf("the KMS returned an unusable data key: %w", err),
			providers.ErrInvalid, events.ErrOpenFailed)
	}
	return dk, nil
}

// Rewrap returns sv with its data key wrapped again under the wrapper's
// newest key-encryption key, bound to b: the value's nonce and ciphertext
// stay as they are when the kid does not change (a new version of the same
// KEK); when the newest KEK has another kid (an AWS KMS key_id moved to
// another key), the value is sealed again under the same data key and a
// fresh nonce, since the kid is part of its associated data. The value
// itself is authenticated first, so a tampered value is never rewrapped.
// changed is false when the wrapped key came back identical.
func (s *Sealer) Rewrap(ctx context.Context, sv *events.SealedValue, b events.Binding) (out *events.SealedValue, changed bool, err error) {
	if s.w.KeyID() == "" {
		return nil, false, s.newError("Wrap", "", providers.Permanent, ErrNoKey, providers.ErrInvalid)
	}
	// Unwrap without the cache: the data key bytes are needed again.
	pt, err := s.Open(ctx, sv, b)
	if err != nil {
		return nil, false, err
	}
	clear(pt)
	wc := Context{Alg: sv.Alg, TeamID: b.TeamID}
	var key []byte
	err = s.call(ctx, "Unwrap", sv.KID, &s.st.unwrapCalls, func(ctx context.Context) error {
		var err error
		key, err = s.w.Unwrap(ctx, sv.KID, sv.EDK, wc)
		return err
	})
	if err != nil {
		return nil, false, s.ctxErr("Unwrap", sv.KID, err)
	}
	defer clear(key)
	var w Wrapped
	err = s.call(ctx, "Wrap", s.w.KeyID(), &s.st.wrapCalls, func(ctx context.Context) error {
		var err error
		w, err = s.w.Wrap(ctx, key, wc)
		return err
	})
	if err != nil {
		return nil, false, s.ctxErr("Wrap", s.w.KeyID(), err)
	}
	if err := s.checkSealKID(w.KID); err != nil {
		return nil, false, err
	}
	if w.KID == sv.KID {
		out := *sv
		out.EDK = bytes.Clone(w.EDK)
		s.st.rewraps.Add(1)
		return &out, !bytes.Equal(w.EDK, sv.EDK), nil
	}
	old, err := events.NewEnvelopeDataKey(sv.Alg, sv.KID, key, sv.EDK)
	if err != nil {
		return nil, false, err
	}
	pt, err = old.Open(sv, b)
	if err != nil {
		return nil, false, err
	}
	defer clear(pt)
	dk, err := events.NewEnvelopeDataKey(sv.Alg, w.KID, key, w.EDK)
	if err != nil {
		return nil, false, err
	}
	out, err = dk.Seal(pt, b)
	if err != nil {
		return nil, false, err
	}
	s.st.rewraps.Add(1)
	return out, true, nil
}

// checkSealKID refuses to seal under a kid that Open refuses (outside
// AllowedKeyIDs, e.g. the sealing key moved to a new key not added to
// the list): such values would be dead-lettered by every worker of this
// configuration, and a rewrap would make the ledger's values unreadable.
func (s *Sealer) checkSealKID(kid string) error {
	if s.allowed == nil || s.allowed[kid] {
		return nil
	}
	return s.newError("Wrap", kid, providers.Permanent,
		fmt.Errorf("the sealing key wraps data keys under %s, which is not one of the allowed keys (add it to the allowed key list before sealing with it)", kid),
		events.ErrUnknownKeyID, providers.ErrInvalid)
}

// call runs one KMS operation with the retry policy: each attempt bounded
// by CallTimeout; retryable errors retried after a jittered exponential
// backoff, throttled ones after the KMS's hint (at most
// MaxRetryAfterDefault; a longer hint ends the attempts), up to
// MaxAttempts; permanent errors returned at once. Errors come back as
// *providers.Error, Refused ones also matching events.ErrOpenFailed.
func (s *Sealer) call(ctx context.Context, op, kid string, calls interface{ Add(uint64) uint64 }, fn func(context.Context) error) error {
	backoff := s.cfg.RetryBase
	for attempt := 1; ; attempt++ {
		calls.Add(1)
		actx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		c := s.w.Classify(err)
		if ctx.Err() != nil {
			c = Class{Kind: providers.Retryable}
		}
		err = s.classified(op, kid, c, err)
		if c.Kind == providers.Permanent || attempt >= s.cfg.MaxAttempts || ctx.Err() != nil {
			return err
		}
		wait := backoff/2 + mrand.N(backoff/2+1)
		if c.Kind == providers.Throttled {
			s.st.throttles.Add(1)
			if c.RetryAfter > MaxRetryAfterDefault {
				return err
			}
			wait = max(wait, c.RetryAfter)
		}
		s.st.retries.Add(1)
		if s.sleep(ctx, wait) != nil {
			return err
		}
		backoff *= 2
	}
}

// classified makes err a *providers.Error of the wrapper's class, keeping
// one the wrapper built, and adds events.ErrOpenFailed to refusals.
func (s *Sealer) classified(op, kid string, c Class, err error) error {
	var pe *providers.Error
	if !asProviderError(err, &pe) {
		pe = providers.NewError(s.w.Name(), op, kid, c.Kind, &sealError{msg: "failed", causes: []error{err}})
	}
	if c.RetryAfter > 0 && pe.RetryAfter == 0 {
		pe.RetryAfter = c.RetryAfter
	}
	pe.Kind = c.Kind
	if c.Refused && !errors.Is(pe, events.ErrOpenFailed) {
		pe.Err = &sealError{msg: errMsg(pe.Err), causes: []error{pe.Err, events.ErrOpenFailed}}
	}
	return pe
}

func errMsg(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ctxErr turns the caller's own cancellation or deadline while waiting for
// a KMS call into a classified error; errors from the call pass through.
func (s *Sealer) ctxErr(op, kid string, err error) error {
	var pe *providers.Error
	if asProviderError(err, &pe) {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return s.newError(op, kid, providers.Retryable, errors.New("timed out"), context.DeadlineExceeded, providers.ErrUnavailable)
	case errors.Is(err, context.Canceled):
		return s.newError(op, kid, providers.Retryable, errors.New("canceled"), context.Canceled)
	}
	return s.newError(op, kid, providers.Retryable, err)
}

func (s *Sealer) newError(op, kid string, kind providers.Kind, msg error, causes ...error) error {
	return providers.NewError(s.w.Name(), op, kid, kind, &sealError{msg: msg.Error(), causes: append([]error{msg}, causes...)})
}

// openKey identifies an unwrapped data key: the same edk under another
// kid, algorithm or team is another cache entry, so a cache hit never
// grants what the KMS would refuse.
func openKey(wc Context, kid string, edk []byte) [sha256.Size]byte {
	h := sha256.New()
	for _, s := range []string{wc.Alg, kid, wc.TeamID} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(edk)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}
