package kms

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

var (
	bindA  = events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	bindB  = events.Binding{TeamID: "team-b", KeyID: "key-1", Generation: 1}
	bindA2 = events.Binding{TeamID: "team-a", KeyID: "key-2", Generation: 1}
)

func TestSealOpenRoundTrip(t *testing.T) {
	e := startFake(t)
	s := e.sealer(t, nil)
	sv, err := s.Seal(bg, []byte(sentinel), bindA)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Alg != events.AlgA256GCMGCPKMS || sv.KID != testKey || len(sv.EDK) == 0 {
		t.Fatalf("sealed %v", sv)
	}
	raw, err := json.Marshal(sv)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.ValidateSchema(events.SchemaSealedValue, raw); err != nil {
		t.Fatalf("schema: %v", err)
	}
	if bytes.Contains(raw, []byte(sentinel)) {
		t.Fatal("the sealed value contains the plaintext")
	}
	if pt, err := s.Open(bg, sv, bindA); err != nil || string(pt) != sentinel {
		t.Fatalf("Open (same process) = %q, %v", pt, err)
	}
	// Another process (an open-only Sealer) unwraps with Decrypt.
	opener := e.sealer(t, map[string]string{OptionKeyName: ""})
	var back events.SealedValue
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if pt, err := opener.Open(bg, &back, bindA); err != nil || string(pt) != sentinel {
		t.Fatalf("Open (other process) = %q, %v", pt, err)
	}
	if st := opener.Stats(); st.DecryptCalls != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The wire: CRC32C both ways, the team as additional data, the
	// routing header.
	enc := e.fake.Requests("Encrypt")[0].(*kmspb.EncryptRequest)
	if enc.GetName() != testKey || !bytes.Equal(enc.GetAdditionalAuthenticatedData(), bindA.GCPKMSAdditionalData()) ||
		enc.GetPlaintextCrc32C() == nil || enc.GetAdditionalAuthenticatedDataCrc32C() == nil || len(enc.GetPlaintext()) != 32 {
		t.Fatalf("Encrypt request: name %q aad %q crc %v/%v", enc.GetName(), enc.GetAdditionalAuthenticatedData(), enc.GetPlaintextCrc32C(), enc.GetAdditionalAuthenticatedDataCrc32C())
	}
	dec := e.fake.Requests("Decrypt")[0].(*kmspb.DecryptRequest)
	if dec.GetName() != testKey || !bytes.Equal(dec.GetAdditionalAuthenticatedData(), bindA.GCPKMSAdditionalData()) ||
		dec.GetCiphertextCrc32C() == nil || dec.GetAdditionalAuthenticatedDataCrc32C() == nil {
		t.Fatal("Decrypt request lacks name, additional data or checksums")
	}
	if h := e.fake.RoutingHeaders("Encrypt")[0]; !strings.Contains(h, "name=") {
		t.Fatalf("routing header %q", h)
	}

	// A CryptoKeyVersion as key_name: kid is still the CryptoKey.
	v2, err := e.fake.Rotate(testKey)
	if err != nil {
		t.Fatal(err)
	}
	sv2, err := e.sealer(t, map[string]string{OptionKeyName: v2}).Seal(bg, []byte("x"), bindA)
	if err != nil || sv2.KID != testKey {
		t.Fatalf("Seal with a version: %v, %v", sv2, err)
	}
	if pt, err := opener.Open(bg, sv2, bindA); err != nil || string(pt) != "x" {
		t.Fatalf("Open of a version-2 value = %q, %v", pt, err)
	}
	// Values wrapped by version 1 still open after rotation.
	opener.Purge()
	if _, err := opener.Open(bg, sv, bindA); err != nil {
		t.Fatalf("Open after rotation: %v", err)
	}
}

func TestOpenFailures(t *testing.T) {
	e := startFake(t)
	sv, err := e.sealer(t, nil).Seal(bg, []byte(sentinel), bindA)
	if err != nil {
		t.Fatal(err)
	}
	fresh := func() *Sealer { return e.sealer(t, map[string]string{OptionKeyName: ""}) }
	var errs []error
	check := func(name string, err error, want ...error) {
		t.Helper()
		errs = append(errs, err)
		for _, w := range want {
			if !errors.Is(err, w) {
				t.Errorf("%s: %v, want %v", name, err, w)
			}
		}
		if providers.IsRetryable(err) {
			t.Errorf("%s: %v is retryable, want permanent", name, err)
		}
	}
	// Another team: Cloud KMS refuses the additional data.
	_, err = fresh().Open(bg, sv, bindB)
	check("another team", err, events.ErrOpenFailed, ErrInvalidCiphertext)
	if Code(err) != codes.InvalidArgument {
		t.Errorf("another team: code %v", Code(err))
	}
	// Another key of the same team: the AES-GCM associated data.
	_, err = fresh().Open(bg, sv, bindA2)
	check("another key id", err, events.ErrOpenFailed)
	// Tampered ct.
	bad := *sv
	bad.Ciphertext = append([]byte{}, sv.Ciphertext...)
	bad.Ciphertext[0] ^= 1
	_, err = fresh().Open(bg, &bad, bindA)
	check("tampered ct", err, events.ErrOpenFailed)
	// Tampered edk.
	bad = *sv
	bad.EDK = append([]byte{}, sv.EDK...)
	bad.EDK[len(bad.EDK)-3] ^= 1
	_, err = fresh().Open(bg, &bad, bindA)
	check("tampered edk", err, events.ErrOpenFailed, ErrInvalidCiphertext)
	// Another existing key.
	bad = *sv
	bad.KID = otherKey
	_, err = fresh().Open(bg, &bad, bindA)
	check("other key", err, events.ErrOpenFailed, ErrInvalidCiphertext)
	// Unknown key.
	bad = *sv
	bad.KID = "projects/p1/locations/global/keyRings/keyrelay/cryptoKeys/gone"
	_, err = fresh().Open(bg, &bad, bindA)
	check("unknown key", err, ErrKeyUnusable)
	if Code(err) != codes.NotFound {
		t.Errorf("unknown key: code %v", Code(err))
	}
	// A kid that is not a CryptoKey name, or outside allowed_key_names:
	// refused without a call.
	before := e.fake.Calls("Decrypt")
	bad = *sv
	bad.KID = "alias-keyrelay"
	_, err = fresh().Open(bg, &bad, bindA)
	check("not a key name", err, events.ErrUnknownKeyID)
	_, err = e.sealer(t, map[string]string{OptionAllowedKeyNames: otherKey}).Open(bg, sv, bindA)
	check("not allowed", err, events.ErrUnknownKeyID)
	// Other algorithms.
	kr, err := events.NewKeyring("k1", map[string][]byte{"k1": bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	local, err := kr.Seal(bg, []byte(sentinel), bindA)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fresh().Open(bg, local, bindA)
	check("keyring value", err, events.ErrUnsupportedAlg)
	if n := e.fake.Calls("Decrypt"); n != before {
		t.Errorf("%d Decrypt calls for refused values", n-before)
	}
	// Access denied, disabled version.
	e.fake.FailNext("Decrypt", codes.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '"+testKey+"' (or it may not exist).", 1)
	_, err = fresh().Open(bg, sv, bindA)
	check("permission denied", err, providers.ErrAccessDenied)
	if err := e.fake.SetVersionEnabled(testKey+"/cryptoKeyVersions/1", false); err != nil {
		t.Fatal(err)
	}
	_, err = fresh().Open(bg, sv, bindA)
	check("disabled version", err, ErrKeyUnusable)
	_, err = e.sealer(t, nil).Seal(bg, []byte(sentinel), bindA)
	check("seal with a disabled primary", err, ErrKeyUnusable)
	if err := e.fake.SetVersionEnabled(testKey+"/cryptoKeyVersions/1", true); err != nil {
		t.Fatal(err)
	}
	_, err = e.sealer(t, map[string]string{OptionKeyName: ""}).Seal(bg, []byte(sentinel), bindA)
	check("open-only seal", err, ErrNoKey)

	for _, err := range errs {
		if err == nil {
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, sentinel) || strings.Contains(msg, base64.StdEncoding.EncodeToString(sv.EDK)) ||
			strings.Contains(msg, base64.StdEncoding.EncodeToString(sv.Ciphertext)) {
			t.Errorf("error leaks the value or the envelope: %s", msg)
		}
	}
}

func TestTransientErrors(t *testing.T) {
	e := startFake(t)
	s := e.sealer(t, nil)
	for _, c := range []struct {
		code codes.Code
		kind providers.Kind
		is   error
	}{
		{codes.Unavailable, providers.Retryable, providers.ErrUnavailable},
		{codes.Internal, providers.Retryable, providers.ErrUnavailable},
		{codes.DeadlineExceeded, providers.Retryable, providers.ErrUnavailable},
		{codes.ResourceExhausted, providers.Throttled, providers.ErrThrottled},
		{codes.Unauthenticated, providers.Permanent, providers.ErrAccessDenied},
	} {
		e.fake.FailNext("Encrypt", c.code, "injected", 1)
		_, err := s.Seal(bg, []byte(sentinel), bindA)
		var pe *providers.Error
		if !errors.As(err, &pe) || pe.Kind != c.kind || !errors.Is(err, c.is) || Code(err) != c.code {
			t.Errorf("%v: %v, want %v", c.code, err, c.kind)
		}
	}
	// After the faults, sealing works (nothing failed was cached).
	if _, err := s.Seal(bg, []byte("x"), bindA); err != nil {
		t.Fatal(err)
	}
}

// The fake rejects checksums that do not match; the sealer checks the
// response's; both are retryable ErrChecksum.
func TestChecksums(t *testing.T) {
	e := startFake(t)
	_, err := e.client.Encrypt(bg, &kmspb.EncryptRequest{Name: testKey, Plaintext: []byte("abc"), PlaintextCrc32C: crc32c([]byte("abd"))})
	if err == nil {
		t.Fatal("the fake accepted a wrong plaintext_crc32c")
	}
	if werr := wrapErr("Encrypt", testKey, err); !errors.Is(werr, ErrChecksum) || !providers.IsRetryable(werr) {
		t.Fatalf("wrong request checksum: %v", werr)
	}
	api := &tamperAPI{API: e.client, encrypt: func(r *kmspb.EncryptResponse) { r.Ciphertext[0] ^= 1 }}
	s, err := NewSealer(api, Config{KeyName: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(bg, []byte(sentinel), bindA); !errors.Is(err, ErrChecksum) || !providers.IsRetryable(err) {
		t.Fatalf("corrupted Encrypt response: %v", err)
	}
	api.encrypt = func(r *kmspb.EncryptResponse) { r.VerifiedAdditionalAuthenticatedDataCrc32C = false }
	if _, err := s.Seal(bg, []byte(sentinel), bindA); !errors.Is(err, ErrChecksum) {
		t.Fatalf("unverified aad checksum: %v", err)
	}
	api.encrypt = nil
	sv, err := s.Seal(bg, []byte(sentinel), bindA)
	if err != nil {
		t.Fatal(err)
	}
	api.decrypt = func(r *kmspb.DecryptResponse) { r.Plaintext[0] ^= 1 }
	s.Purge()
	if _, err := s.Open(bg, sv, bindA); !errors.Is(err, ErrChecksum) || !providers.IsRetryable(err) {
		t.Fatalf("corrupted Decrypt response: %v", err)
	}
}

// One Encrypt per data key for N seals within the TTL; one Decrypt for N
// opens of one edk, concurrent ones included.
func TestCaches(t *testing.T) {
	e := startFake(t)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cfg := Config{KeyName: testKey, DataKeyMaxUses: 100}.WithDefaults()
	s := newSealer(e.client, cfg, clock)
	const n = 50
	var sealed []*events.SealedValue
	for i := 0; i < n; i++ {
		sv, err := s.Seal(bg, []byte(sentinel), bindA)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, sv)
	}
	if got := e.fake.Calls("Encrypt"); got != 1 {
		t.Fatalf("%d Encrypt calls for %d seals, want 1", got, n)
	}
	if st := s.Stats(); st.EncryptCalls != 1 || st.SealCacheHits != n-1 {
		t.Fatalf("stats %+v", st)
	}
	// Another team has its own data key.
	if _, err := s.Seal(bg, []byte("x"), bindB); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Calls("Encrypt"); got != 2 {
		t.Fatalf("%d Encrypt calls after a second team, want 2", got)
	}
	// After the TTL, a new data key.
	mu.Lock()
	now = now.Add(cfg.DataKeyTTL)
	mu.Unlock()
	if _, err := s.Seal(bg, []byte("x"), bindA); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Calls("Encrypt"); got != 3 {
		t.Fatalf("%d Encrypt calls after the TTL, want 3", got)
	}
	// After DataKeyMaxUses, a new data key.
	s2 := newSealer(e.client, Config{KeyName: testKey, DataKeyMaxUses: 2}.WithDefaults(), time.Now)
	before := e.fake.Calls("Encrypt")
	for i := 0; i < 5; i++ {
		if _, err := s2.Seal(bg, []byte("x"), bindA); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.fake.Calls("Encrypt") - before; got != 3 {
		t.Fatalf("%d Encrypt calls for 5 seals at 2 uses per key, want 3", got)
	}

	// Opens: a fresh opener, N values of one edk, half of them concurrent.
	opener := newSealer(e.client, Config{}.WithDefaults(), time.Now)
	before = e.fake.Calls("Decrypt")
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for _, sv := range sealed[:n/2] {
		wg.Add(1)
		go func(sv *events.SealedValue) {
			defer wg.Done()
			pt, err := opener.Open(context.Background(), sv, bindA)
			if err == nil && string(pt) != sentinel {
				err = errors.New("wrong plaintext")
			}
			errc <- err
		}(sv)
	}
	wg.Wait()
	for _, sv := range sealed[n/2:] {
		if _, err := opener.Open(bg, sv, bindA); err != nil {
			t.Fatal(err)
		}
	}
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := e.fake.Calls("Decrypt") - before; got != 1 {
		t.Fatalf("%d Decrypt calls for %d opens of one edk, want 1", got, n)
	}
	// A cache hit never opens for another team.
	if _, err := opener.Open(bg, sealed[0], bindB); !errors.Is(err, events.ErrOpenFailed) {
		t.Fatalf("cached key opened for another team: %v", err)
	}
}

// awsStyleOpener opens A256GCM-KMS values with one data key, as the AWS
// KMS sealer does after unwrapping it.
type awsStyleOpener struct{ dk *events.DataKey }

func (o awsStyleOpener) Open(_ context.Context, sv *events.SealedValue, b events.Binding) ([]byte, error) {
	return o.dk.Open(sv, b)
}
func (o awsStyleOpener) OpensAlg(alg string) bool { return alg == events.AlgA256GCMKMS }

// events.Multi opens keyring, AWS-KMS-style and Cloud KMS values side by
// side, each with its own opener.
func TestMulti(t *testing.T) {
	e := startFake(t)
	gcp := e.sealer(t, nil)
	kr, err := events.NewKeyring("k1", map[string][]byte{"k1": bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	awsDK, err := events.NewDataKey("arn:aws:kms:us-east-1:111122223333:key/abc", bytes.Repeat([]byte{2}, 32), []byte("aws-edk"))
	if err != nil {
		t.Fatal(err)
	}
	m := events.Multi{kr, awsStyleOpener{awsDK}, gcp}
	for _, c := range []struct {
		name string
		seal func() (*events.SealedValue, error)
	}{
		{"keyring", func() (*events.SealedValue, error) { return kr.Seal(bg, []byte(sentinel), bindA) }},
		{"aws", func() (*events.SealedValue, error) { return awsDK.Seal([]byte(sentinel), bindA) }},
		{"gcp", func() (*events.SealedValue, error) { return gcp.Seal(bg, []byte(sentinel), bindA) }},
	} {
		sv, err := c.seal()
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := m.Open(bg, sv, bindA); err != nil || string(pt) != sentinel {
			t.Errorf("%s: Multi.Open = %q, %v", c.name, pt, err)
		}
	}
	if !m.OpensAlg(events.AlgA256GCMGCPKMS) || (events.Multi{kr}).OpensAlg(events.AlgA256GCMGCPKMS) {
		t.Error("OpensAlg")
	}
}

// TestDecryptAuthenticationFailures: a Decrypt that fails because the
// ciphertext does not authenticate (tampered, another key, other
// additional data) is permanent, also when the server answers INTERNAL or
// UNKNOWN instead of Cloud KMS's INVALID_ARGUMENT (as independent
// emulators do, with the AES-GCM error as the message); a plain INTERNAL
// stays retryable. A local AES-GCM open failure (the data key is right,
// the sealed value is not) is a permanent *providers.Error.
func TestDecryptAuthenticationFailures(t *testing.T) {
	e := startFake(t)
	s := e.sealer(t, nil)
	sv, err := s.Seal(bg, []byte(sentinel), bindA)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString(e.encrypt(t, testKey, []byte(sentinel)))
	for name, tc := range map[string]struct {
		code      codes.Code
		msg       string
		permanent bool
	}{
		"INTERNAL, Go's GCM error":          {codes.Internal, "decryption failed: cipher: message authentication failed", true},
		"INTERNAL, Cloud KMS's wording":     {codes.Internal, "Decryption failed: the ciphertext is invalid.", true},
		"INTERNAL, wrong key":               {codes.Internal, "Decryption failed: verify that 'name' refers to the correct CryptoKey.", true},
		"UNKNOWN, GCM error":                {codes.Unknown, "cipher: message authentication failed", true},
		"INVALID_ARGUMENT":                  {codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.", true},
		"INTERNAL, a server fault":          {codes.Internal, "Internal error.", false},
		"INTERNAL, an IAM check that fails": {codes.Internal, "IAM check failed: connection refused", false},
	} {
		t.Run(name, func(t *testing.T) {
			fresh := e.sealer(t, map[string]string{OptionKeyName: ""})
			e.fake.FailNext("Decrypt", tc.code, tc.msg, 1)
			_, err := fresh.Open(bg, sv, bindA)
			var pe *providers.Error
			if !errors.As(err, &pe) || (pe.Kind == providers.Permanent) != tc.permanent || providers.IsRetryable(err) == tc.permanent {
				t.Fatalf("Open: %v (kind %v), want permanent=%v", err, pe, tc.permanent)
			}
			if tc.permanent && (!errors.Is(err, ErrInvalidCiphertext) || !errors.Is(err, events.ErrOpenFailed)) {
				t.Errorf("Open: %v, want ErrInvalidCiphertext and events.ErrOpenFailed", err)
			}
			if Code(err) != tc.code {
				t.Errorf("Code = %v, want %v", Code(err), tc.code)
			}
			// LiteLLM's decrypt path classifies the same way.
			e.fake.FailNext("Decrypt", tc.code, tc.msg, 1)
			_, err = NewDecrypter(e.client, testKey).Decrypt(bg, b64)
			if providers.IsRetryable(err) == tc.permanent || (tc.permanent && !errors.Is(err, ErrInvalidCiphertext)) {
				t.Errorf("Decrypter: %v, want permanent=%v", err, tc.permanent)
			}
			if strings.Contains(err.Error(), sentinel) {
				t.Errorf("error leaks the value: %v", err)
			}
		})
	}

	// The data key is cached (this sealer sealed it): a tampered value
	// fails AES-GCM locally, without a Decrypt call, permanently.
	before := e.fake.Calls("Decrypt")
	bad := *sv
	bad.Ciphertext = append([]byte{}, sv.Ciphertext...)
	bad.Ciphertext[len(bad.Ciphertext)-1] ^= 1
	_, err = s.Open(bg, &bad, bindA)
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Kind != providers.Permanent || !errors.Is(err, events.ErrOpenFailed) || providers.IsRetryable(err) {
		t.Fatalf("local AES-GCM failure: %v, want a permanent *providers.Error with events.ErrOpenFailed", err)
	}
	if n := e.fake.Calls("Decrypt") - before; n != 0 {
		t.Errorf("%d Decrypt calls for a cached data key", n)
	}
	// Bound to another key id of the same team: the same, locally.
	_, err = s.Open(bg, sv, bindA2)
	if !errors.As(err, &pe) || pe.Kind != providers.Permanent || !errors.Is(err, events.ErrOpenFailed) {
		t.Fatalf("value bound to another key: %v", err)
	}
}
