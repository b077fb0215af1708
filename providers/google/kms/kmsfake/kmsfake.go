// Package kmsfake is a wire-faithful fake of Google Cloud KMS's
// KeyManagementService for tests: a real gRPC server on 127.0.0.1 that the
// official client (cloud.google.com/go/kms/apiv1) talks to unchanged.
//
// It implements Encrypt and Decrypt of symmetric ENCRYPT_DECRYPT keys the
// way Cloud KMS documents them: a CryptoKey has numbered versions, Encrypt
// uses the primary version (or the version named), Decrypt takes the
// CryptoKey name and finds the version from the ciphertext, the additional
// authenticated data must match, CRC32C checksums sent by the client are
// verified (a mismatch is INVALID_ARGUMENT) and reported back
// (verified_*_crc32c), and responses carry their own checksums. The
// ciphertext is real AES-256-GCM under a random per-version key, bound to
// the CryptoKey, so a tampered ciphertext, another key or other additional
// data fails with INVALID_ARGUMENT as Cloud KMS does; unknown keys are
// NOT_FOUND, disabled versions FAILED_PRECONDITION. Errors can be injected
// per method (FailNext) for PERMISSION_DENIED, UNAVAILABLE and so on. Every
// other RPC is UNIMPLEMENTED.
//
// Access tokens: a StartTLS fake authenticates every call as Cloud KMS
// does: the token must be one Credentials issued and still good by the
// fake's clock, or a service account's unexpired self-signed JWT (its
// signature is not checked). ExpireTokens expires (revokes) every token so
// far while clients still hold them as valid; an expired token fails with
// UNAUTHENTICATED and google.rpc.ErrorInfo reason ACCESS_TOKEN_EXPIRED
// (domain googleapis.com, metadata service and method), a missing one
// with CREDENTIALS_MISSING. Such calls count in Calls. A Start fake
// (plaintext, for clients without authentication) checks no token.
package kmsfake

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyrelay/keyrelay/providers/google/internal/fakeauth"
)

// Cloud KMS limits on Encrypt and Decrypt.
const (
	MaxPlaintextBytes  = 64 << 10
	MaxAADBytes        = 64 << 10
	MaxCiphertextBytes = MaxPlaintextBytes + 1024
)

var (
	crcTable      = crc32.MakeTable(crc32.Castagnoli)
	cryptoKeyRe   = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$`)
	keyVersionRe  = regexp.MustCompile(`^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)/cryptoKeyVersions/([1-9][0-9]*)$`)
	ciphertextTag = []byte{0x0a, 0x4b} // format marker of the fake's ciphertexts
)

// CRC32C returns the Castagnoli checksum Cloud KMS uses, as the int64 its
// *_crc32c fields carry.
func CRC32C(b []byte) int64 { return int64(crc32.Checksum(b, crcTable)) }

type version struct {
	aead    cipher.AEAD
	enabled bool
}

type cryptoKey struct {
	versions []*version // versions[i] is version i+1
	primary  int        // 1-based
}

type fault struct {
	code codes.Code
	msg  string
	n    int // remaining; < 0 forever
}

// Server is a running fake. It is safe for concurrent use.
type Server struct {
	kmspb.UnimplementedKeyManagementServiceServer

	lis net.Listener
	srv *grpc.Server

	// tokens are checked on every call of a StartTLS fake (authenticate).
	tokens       *fakeauth.Tokens
	authenticate bool
	dir          string // StartTLS: holds CAFile

	mu       sync.Mutex
	keys     map[string]*cryptoKey
	faults   map[string]*fault
	calls    map[string]int
	requests map[string][]proto.Message
	params   map[string][]string
}

// Start starts a fake on a free 127.0.0.1 port, in plaintext, for clients
// without authentication.
func Start() (*Server, error) {
	return start(nil, "")
}

// StartTLS starts a fake on a free 127.0.0.1 port over TLS, with a fresh
// self-signed certificate for 127.0.0.1 (CAFile), that authenticates every
// call's access token as Cloud KMS does (see the package documentation,
// Credentials and ExpireTokens).
func StartTLS() (*Server, error) {
	certPEM, keyPEM, err := fakeauth.SelfSignedCert("kmsfake")
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kmsfake")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), certPEM, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s, err := start([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))}, dir)
	if err != nil {
		os.RemoveAll(dir)
	}
	return s, err
}

// start serves a fake with opts; dir, the directory of a TLS fake's
// CAFile, makes it authenticate calls.
func start(opts []grpc.ServerOption, dir string) (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{lis: lis, srv: grpc.NewServer(opts...), keys: map[string]*cryptoKey{}, faults: map[string]*fault{},
		calls: map[string]int{}, requests: map[string][]proto.Message{}, params: map[string][]string{},
		tokens: fakeauth.NewTokens("cloudkms.googleapis.com"), authenticate: dir != "", dir: dir}
	kmspb.RegisterKeyManagementServiceServer(s.srv, s)
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

// Addr is the host:port to pass to option.WithEndpoint.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// CAFile is the PEM file of a StartTLS fake's certificate ("" for Start).
func (s *Server) CAFile() string {
	if s.dir == "" {
		return ""
	}
	return filepath.Join(s.dir, "ca.pem")
}

// Close stops the server.
func (s *Server) Close() {
	s.srv.Stop()
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// SetClock replaces the clock by which access tokens expire.
func (s *Server) SetClock(now func() time.Time) { s.tokens.SetClock(now) }

// Credentials returns new credentials (each with its own token cache, as
// the auth library keeps it) whose access tokens this fake issues, for
// option.WithAuthCredentials. Only a StartTLS fake checks them.
func (s *Server) Credentials() *auth.Credentials { return s.tokens.Credentials() }

// ExpireTokens expires every access token issued or accepted so far, as
// a revoked token or one expired by Google's clock: the client still
// holds it as valid, and the next call with it fails with UNAUTHENTICATED
// (ACCESS_TOKEN_EXPIRED). Tokens issued later are good.
func (s *Server) ExpireTokens() { s.tokens.Expire() }

// SetTokenLifetime sets the lifetime of the tokens Credentials issues from
// now on (default an hour); zero or less makes every new token expired on
// arrival.
func (s *Server) SetTokenLifetime(d time.Duration) { s.tokens.SetLifetime(d) }

// FailTokenRequests makes the next n token requests of Credentials fail
// with the HTTP status code, as the auth library reports a token endpoint
// answering so.
func (s *Server) FailTokenRequests(code, n int) { s.tokens.FailIssue(code, n) }

// TokensIssued returns how many access tokens Credentials has issued.
func (s *Server) TokensIssued() int { return s.tokens.Issued() }

// CreateKey creates the ENCRYPT_DECRYPT CryptoKey name
// ("projects/P/locations/L/keyRings/R/cryptoKeys/K") with version 1 as its
// primary, and returns the version's name.
func (s *Server) CreateKey(name string) (string, error) {
	if !cryptoKeyRe.MatchString(name) {
		return "", fmt.Errorf("kmsfake: %q is not a CryptoKey name", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys[name] != nil {
		return "", fmt.Errorf("kmsfake: %s exists", name)
	}
	s.keys[name] = &cryptoKey{}
	return s.addVersionLocked(name)
}

// Rotate adds a version to the CryptoKey and makes it primary; older
// versions still decrypt. It returns the new version's name.
func (s *Server) Rotate(name string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys[name] == nil {
		return "", fmt.Errorf("kmsfake: no key %s", name)
	}
	return s.addVersionLocked(name)
}

func (s *Server) addVersionLocked(name string) (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	k := s.keys[name]
	k.versions = append(k.versions, &version{aead: aead, enabled: true})
	k.primary = len(k.versions)
	return fmt.Sprintf("%s/cryptoKeyVersions/%d", name, k.primary), nil
}

// SetVersionEnabled enables or disables a CryptoKeyVersion (by its full
// name); a disabled version neither encrypts nor decrypts
// (FAILED_PRECONDITION).
func (s *Server) SetVersionEnabled(versionName string, enabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, v, st := s.versionLocked(versionName)
	if st != nil || k == nil {
		return fmt.Errorf("kmsfake: no version %s", versionName)
	}
	v.enabled = enabled
	return nil
}

// FailNext makes the next n calls of method ("Encrypt", "Decrypt") fail
// with code and msg; n < 0 fails every call until Reset.
func (s *Server) FailNext(method string, code codes.Code, msg string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = &fault{code: code, msg: msg, n: n}
}

// Reset removes every injected fault.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[string]*fault{}
}

// Calls returns how many requests method received (failed ones included).
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Requests returns copies of the requests method received, in order.
func (s *Server) Requests(method string) []proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]proto.Message, len(s.requests[method]))
	for i, m := range s.requests[method] {
		out[i] = proto.Clone(m)
	}
	return out
}

// RoutingHeaders returns the x-goog-request-params metadata of method's
// requests, in order (the client sends "name=<resource>").
func (s *Server) RoutingHeaders(method string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.params[method]...)
}

func (s *Server) begin(ctx context.Context, method string, req proto.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	s.requests[method] = append(s.requests[method], proto.Clone(req))
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		s.params[method] = append(s.params[method], strings.Join(md.Get("x-goog-request-params"), ","))
	}
	if s.authenticate {
		if err := s.tokens.Check(ctx); err != nil {
			return err
		}
	}
	if f := s.faults[method]; f != nil && f.n != 0 {
		if f.n > 0 {
			f.n--
		}
		return status.Error(f.code, f.msg)
	}
	return nil
}

// versionLocked resolves a CryptoKeyVersion name.
func (s *Server) versionLocked(name string) (*cryptoKey, *version, error) {
	m := keyVersionRe.FindStringSubmatch(name)
	if m == nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "Invalid resource name %q.", name)
	}
	k := s.keys[m[1]]
	n, _ := strconv.Atoi(m[2])
	if k == nil || n > len(k.versions) {
		return nil, nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", name)
	}
	return k, k.versions[n-1], nil
}

func checkCRC(field string, data []byte, sum *wrapperspb.Int64Value) (bool, error) {
	if sum == nil {
		return false, nil
	}
	if sum.GetValue() != CRC32C(data) {
		return false, status.Errorf(codes.InvalidArgument, "The checksum in field %s did not match the data in field %s.",
			field+"_crc32c", field)
	}
	return true, nil
}

// gcmAAD binds a ciphertext to its CryptoKey and version as well as to the
// caller's additional authenticated data.
func gcmAAD(keyName string, ver int, aad []byte) []byte {
	h := sha256.Sum256([]byte(keyName + "\x00" + strconv.Itoa(ver)))
	return append(h[:], aad...)
}

// Encrypt implements kmspb.KeyManagementServiceServer.
func (s *Server) Encrypt(ctx context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	if err := s.begin(ctx, "Encrypt", req); err != nil {
		return nil, err
	}
	switch {
	case len(req.GetPlaintext()) == 0:
		return nil, status.Error(codes.InvalidArgument, "Plaintext is empty.")
	case len(req.GetPlaintext()) > MaxPlaintextBytes:
		return nil, status.Errorf(codes.InvalidArgument, "Plaintext must be at most %d bytes.", MaxPlaintextBytes)
	case len(req.GetAdditionalAuthenticatedData()) > MaxAADBytes:
		return nil, status.Errorf(codes.InvalidArgument, "Additional authenticated data must be at most %d bytes.", MaxAADBytes)
	}
	vpt, err := checkCRC("plaintext", req.GetPlaintext(), req.GetPlaintextCrc32C())
	if err != nil {
		return nil, err
	}
	vaad, err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	keyName, ver := req.GetName(), 0
	var v *version
	switch {
	case cryptoKeyRe.MatchString(keyName):
		k := s.keys[keyName]
		if k == nil {
			s.mu.Unlock()
			return nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", keyName)
		}
		ver, v = k.primary, k.versions[k.primary-1]
	default:
		_, v, err = s.versionLocked(keyName)
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		m := keyVersionRe.FindStringSubmatch(keyName)
		keyName = m[1]
		ver, _ = strconv.Atoi(m[2])
	}
	enabled := v.enabled
	s.mu.Unlock()
	versionName := fmt.Sprintf("%s/cryptoKeyVersions/%d", keyName, ver)
	if !enabled {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not enabled, current state is: DISABLED.", versionName)
	}
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return nil, status.Error(codes.Internal, "Internal error.")
	}
	ct := append([]byte{}, ciphertextTag...)
	ct = binary.BigEndian.AppendUint32(ct, uint32(ver))
	ct = append(ct, nonce...)
	ct = v.aead.Seal(ct, nonce, req.GetPlaintext(), gcmAAD(keyName, ver, req.GetAdditionalAuthenticatedData()))
	return &kmspb.EncryptResponse{
		Name:                    versionName,
		Ciphertext:              ct,
		CiphertextCrc32C:        wrapperspb.Int64(CRC32C(ct)),
		VerifiedPlaintextCrc32C: vpt,
		VerifiedAdditionalAuthenticatedDataCrc32C: vaad,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}, nil
}

// Decrypt implements kmspb.KeyManagementServiceServer.
func (s *Server) Decrypt(ctx context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	if err := s.begin(ctx, "Decrypt", req); err != nil {
		return nil, err
	}
	keyName := req.GetName()
	if !cryptoKeyRe.MatchString(keyName) {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid resource name %q: Decrypt takes a CryptoKey.", keyName)
	}
	ct, aad := req.GetCiphertext(), req.GetAdditionalAuthenticatedData()
	switch {
	case len(ct) == 0:
		return nil, status.Error(codes.InvalidArgument, "Ciphertext is empty.")
	case len(ct) > MaxCiphertextBytes:
		return nil, status.Errorf(codes.InvalidArgument, "Ciphertext must be at most %d bytes.", MaxCiphertextBytes)
	case len(aad) > MaxAADBytes:
		return nil, status.Errorf(codes.InvalidArgument, "Additional authenticated data must be at most %d bytes.", MaxAADBytes)
	}
	if _, err := checkCRC("ciphertext", ct, req.GetCiphertextCrc32C()); err != nil {
		return nil, err
	}
	if _, err := checkCRC("additional_authenticated_data", aad, req.GetAdditionalAuthenticatedDataCrc32C()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	k := s.keys[keyName]
	if k == nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", keyName)
	}
	invalid := status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.")
	const header = 2 + 4 + 12
	if len(ct) < header+16 || !bytes.Equal(ct[:2], ciphertextTag) {
		s.mu.Unlock()
		return nil, invalid
	}
	ver := int(binary.BigEndian.Uint32(ct[2:6]))
	if ver < 1 || ver > len(k.versions) {
		s.mu.Unlock()
		return nil, invalid
	}
	v, primary := k.versions[ver-1], k.primary
	s.mu.Unlock()
	if !v.enabled {
		return nil, status.Errorf(codes.FailedPrecondition, "%s/cryptoKeyVersions/%d is not enabled, current state is: DISABLED.", keyName, ver)
	}
	pt, err := v.aead.Open(nil, ct[6:header], ct[header:], gcmAAD(keyName, ver, aad))
	if err != nil {
		return nil, invalid
	}
	return &kmspb.DecryptResponse{
		Plaintext:       pt,
		PlaintextCrc32C: wrapperspb.Int64(CRC32C(pt)),
		UsedPrimary:     ver == primary,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}, nil
}
