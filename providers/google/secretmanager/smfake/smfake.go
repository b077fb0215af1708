// Package smfake is a wire-faithful, in-memory fake of Google Secret
// Manager's v1 gRPC API (secretmanagerpb.SecretManagerServiceServer) for
// tests: no emulator of Secret Manager can be had offline. It serves real
// gRPC on 127.0.0.1, so the official client (cloud.google.com/go/
// secretmanager/apiv1) talks to it exactly as it talks to Google, with
// option.WithEndpoint, option.WithoutAuthentication and insecure transport
// credentials.
//
// Documented semantics covered: CreateSecret (ALREADY_EXISTS), GetSecret,
// UpdateSecret (labels and annotations by update mask, etag checked:
// FAILED_PRECONDITION on mismatch; every update, a no-op too, gives the
// secret a new etag, returned in the answer; adding a version does not
// change the secret's etag), DeleteSecret (etag checked),
// AddSecretVersion (versions numbered 1, 2, ...; data_crc32c verified when
// set: INVALID_ARGUMENT on mismatch), AccessSecretVersion and
// GetSecretVersion (by number or the "latest" alias: the most recently
// created version; FAILED_PRECONDITION when that version is disabled or
// destroyed), ListSecretVersions (newest first, filter "state:ENABLED"
// style is ignored), DisableSecretVersion, EnableSecretVersion and
// DestroySecretVersion (etag checked; a destroyed version is final:
// enabling, disabling or destroying it again is FAILED_PRECONDITION),
// NOT_FOUND for missing secrets and versions, and RESOURCE_EXHAUSTED (or
// any code) through fault injection, with a google.rpc.RetryInfo detail
// when a delay is given.
//
// Quotas are opt-in: EnforceQuotas (e.g. with DefaultQuotas: access
// 90,000, read 600 and write 600 a minute per project) makes the fake
// throttle, as Secret Manager does, calls over a quota in a sliding window
// (RESOURCE_EXHAUSTED with google.rpc.ErrorInfo and QuotaFailure details,
// no RetryInfo); windows and limits can be scaled down for tests, and
// Throttled counts the calls refused. Without it nothing is throttled.
//
// Access tokens: a StartTLS fake authenticates every call as Google does,
// before quotas: the token must be one Credentials issued and still good
// by the fake's clock, or a service account's unexpired self-signed JWT
// (its signature is not checked). ExpireTokens expires (revokes) every
// token so far while clients still hold them as valid; an expired token
// fails with UNAUTHENTICATED and google.rpc.ErrorInfo reason
// ACCESS_TOKEN_EXPIRED (domain googleapis.com, metadata service and
// method), a missing one with CREDENTIALS_MISSING. Errors counts these
// refusals; Calls does not (the call never reached the API). A Start fake
// (plaintext, for clients without authentication) checks no token.
//
// Checksums: AddSecretVersion verifies data_crc32c, and every
// AccessSecretVersion answer carries the payload's data_crc32c (computed
// when the version was added without one, as Google does). CorruptAccess
// flips a bit of the next answers' payloads and keeps their checksum, as
// corruption in transit does; CorruptAdd does the same to the next
// AddSecretVersion requests.
package smfake

import (
	"context"
	"crypto/tls"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/keyrelay/keyrelay/providers/google/internal/fakeauth"
)

// MaxPayloadSize is Secret Manager's limit on a version's data: 64 KiB.
const MaxPayloadSize = 64 * 1024

type version struct {
	pb   *secretmanagerpb.SecretVersion
	data []byte
	crc  *int64
}

type secret struct {
	pb       *secretmanagerpb.Secret
	versions []*version // index i holds version i+1
	gen      int
}

type fault struct {
	code  codes.Code
	n     int
	delay time.Duration
}

// Server is the fake. Its zero value is not usable: use Start or New.
type Server struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer

	mu      sync.Mutex
	secrets map[string]*secret // by full name projects/P/secrets/S
	faults  map[string]*fault  // by method name, e.g. "AddSecretVersion"
	calls   map[string]int
	errs    map[string]map[codes.Code]int
	now     func() time.Time
	etagSeq int

	quota quotaState // see EnforceQuotas

	corrupt    int // AccessSecretVersion answers left to corrupt
	corruptAdd int // AddSecretVersion requests left to corrupt

	// tokens are checked on every call of a StartTLS fake (authenticate).
	tokens       *fakeauth.Tokens
	authenticate bool

	addr   string
	caFile string
	gs     *grpc.Server
}

// New returns a fake that is not listening; see Serve.
func New() *Server {
	return &Server{secrets: map[string]*secret{}, faults: map[string]*fault{}, calls: map[string]int{},
		errs: map[string]map[codes.Code]int{}, now: time.Now, tokens: fakeauth.NewTokens("secretmanager.googleapis.com")}
}

// Start serves a new fake on a free port of 127.0.0.1 until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := New()
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Serve starts listening on 127.0.0.1 and a free port.
func (s *Server) Serve() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	s.gs = grpc.NewServer(grpc.UnaryInterceptor(s.countErrors))
	secretmanagerpb.RegisterSecretManagerServiceServer(s.gs, s)
	go s.gs.Serve(ln) //nolint:errcheck // ends with Stop
	return nil
}

// Stop stops the server.
func (s *Server) Stop() {
	if s.gs != nil {
		s.gs.Stop()
	}
}

// Addr is the host:port the fake listens on.
func (s *Server) Addr() string { return s.addr }

// SetClock replaces the fake's clock (create and destroy times, and the
// expiry of access tokens).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
	s.tokens.SetClock(now)
}

// Fail makes the next n calls of method (e.g. "AddSecretVersion", or "*"
// for every method) fail with code; a positive retryDelay adds a
// google.rpc.RetryInfo detail. An injected FAILED_PRECONDITION reads as an
// etag mismatch.
func (s *Server) Fail(method string, code codes.Code, n int, retryDelay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = &fault{code: code, n: n, delay: retryDelay}
}

// Calls returns how many calls of method reached the fake.
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// Errors returns how many calls of method the fake answered with code
// (injected faults included).
func (s *Server) Errors(method string, code codes.Code) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs[method][code]
}

// countErrors is a unary interceptor that authenticates the call (a
// StartTLS fake), throttles it (EnforceQuotas), and counts error answers
// by method and code.
func (s *Server) countErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	var resp any
	var err error
	if s.authenticate {
		err = s.tokens.Check(ctx)
	}
	if err == nil {
		err = s.throttle(info.FullMethod, req)
	}
	if err == nil {
		resp, err = h(ctx, req)
	}
	if err != nil {
		m := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		s.mu.Lock()
		if s.errs[m] == nil {
			s.errs[m] = map[codes.Code]int{}
		}
		s.errs[m][status.Code(err)]++
		s.mu.Unlock()
	}
	return resp, err
}

// Data returns the stored bytes of a version (for tests), nil when absent.
func (s *Server) Data(secretName string, n int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[secretName]
	if sec == nil || n < 1 || n > len(sec.versions) {
		return nil
	}
	return append([]byte(nil), sec.versions[n-1].data...)
}

// enter records a call and applies injected faults. It is called with
// s.mu held.
func (s *Server) enter(method string) error {
	s.calls[method]++
	for _, k := range []string{method, "*"} {
		f := s.faults[k]
		if f == nil || f.n <= 0 {
			continue
		}
		f.n--
		msg := fmt.Sprintf("injected %s failure", f.code)
		if f.code == codes.FailedPrecondition {
			msg = "The etag provided in the request does not match the current etag (injected)."
		}
		st := status.New(f.code, msg)
		if f.delay > 0 {
			if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(f.delay)}); err == nil {
				st = d
			}
		}
		return st.Err()
	}
	return nil
}

func (s *Server) newEtag() string {
	s.etagSeq++
	return strconv.Quote(fmt.Sprintf("%x", s.now().UnixNano()+int64(s.etagSeq)))
}

func parseSecretName(name string) (string, bool) {
	p := strings.Split(name, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "secrets" || !secretIDOK(p[3]) {
		return "", false
	}
	return name, true
}

func secretIDOK(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func labelOK(s string, key bool) bool {
	if len(s) > 63 || (key && s == "") {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r == '_', r == '-', r > 127:
		case r >= '0' && r <= '9':
			if key && i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func checkLabels(l map[string]string) error {
	if len(l) > 64 {
		return status.Error(codes.InvalidArgument, "too many labels")
	}
	for k, v := range l {
		if !labelOK(k, true) || !labelOK(v, false) {
			return status.Errorf(codes.InvalidArgument, "invalid label %q", k)
		}
	}
	return nil
}

func checkAnnotations(a map[string]string) error {
	total := 0
	for k, v := range a {
		total += len(k) + len(v)
		if k == "" || len(k) > 63 {
			return status.Errorf(codes.InvalidArgument, "invalid annotation key %q", k)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
			if !alnum && ((i == 0 || i == len(k)-1) || !(c == '-' || c == '_' || c == '.')) {
				return status.Errorf(codes.InvalidArgument, "invalid annotation key %q", k)
			}
		}
	}
	if total > 16*1024 {
		return status.Error(codes.InvalidArgument, "annotations exceed 16 KiB")
	}
	return nil
}

// resolve finds a version by full name (…/versions/N or …/versions/latest).
func (s *Server) resolve(name string) (*secret, *version, error) {
	i := strings.LastIndex(name, "/versions/")
	if i < 0 {
		return nil, nil, status.Errorf(codes.InvalidArgument, "invalid version name %q", name)
	}
	sn, ok := parseSecretName(name[:i])
	if !ok {
		return nil, nil, status.Errorf(codes.InvalidArgument, "invalid secret name %q", name[:i])
	}
	sec := s.secrets[sn]
	if sec == nil {
		return nil, nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", sn)
	}
	v := name[i+len("/versions/"):]
	if v == "latest" {
		if len(sec.versions) == 0 {
			return nil, nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", sn)
		}
		return sec, sec.versions[len(sec.versions)-1], nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return nil, nil, status.Errorf(codes.InvalidArgument, "invalid version %q", v)
	}
	if n > len(sec.versions) {
		return nil, nil, status.Errorf(codes.NotFound, "Secret Version [%s/versions/%d] not found.", sn, n)
	}
	return sec, sec.versions[n-1], nil
}

func (s *Server) getSecret(name string) (*secret, error) {
	sn, ok := parseSecretName(name)
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "invalid secret name %q", name)
	}
	sec := s.secrets[sn]
	if sec == nil {
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found.", sn)
	}
	return sec, nil
}

// CreateSecret implements the RPC.
func (s *Server) CreateSecret(_ context.Context, req *secretmanagerpb.CreateSecretRequest) (*secretmanagerpb.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("CreateSecret"); err != nil {
		return nil, err
	}
	if !secretIDOK(req.GetSecretId()) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid secret id %q", req.GetSecretId())
	}
	if req.GetSecret() == nil || req.GetSecret().GetReplication() == nil {
		return nil, status.Error(codes.InvalidArgument, "secret.replication is required")
	}
	if err := checkLabels(req.GetSecret().GetLabels()); err != nil {
		return nil, err
	}
	if err := checkAnnotations(req.GetSecret().GetAnnotations()); err != nil {
		return nil, err
	}
	name := req.GetParent() + "/secrets/" + req.GetSecretId()
	if _, ok := parseSecretName(name); !ok {
		return nil, status.Errorf(codes.InvalidArgument, "invalid parent %q", req.GetParent())
	}
	if s.secrets[name] != nil {
		return nil, status.Errorf(codes.AlreadyExists, "Secret [%s] already exists.", name)
	}
	pb := proto.Clone(req.GetSecret()).(*secretmanagerpb.Secret)
	pb.Name = name
	pb.CreateTime = timestamppb.New(s.now())
	pb.Etag = s.newEtag()
	s.secrets[name] = &secret{pb: pb}
	return proto.Clone(pb).(*secretmanagerpb.Secret), nil
}

// GetSecret implements the RPC.
func (s *Server) GetSecret(_ context.Context, req *secretmanagerpb.GetSecretRequest) (*secretmanagerpb.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("GetSecret"); err != nil {
		return nil, err
	}
	sec, err := s.getSecret(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(sec.pb).(*secretmanagerpb.Secret), nil
}

// UpdateSecret implements the RPC: labels and annotations by update mask.
func (s *Server) UpdateSecret(_ context.Context, req *secretmanagerpb.UpdateSecretRequest) (*secretmanagerpb.Secret, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("UpdateSecret"); err != nil {
		return nil, err
	}
	in := req.GetSecret()
	sec, err := s.getSecret(in.GetName())
	if err != nil {
		return nil, err
	}
	if len(req.GetUpdateMask().GetPaths()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "update_mask is required")
	}
	if in.GetEtag() != "" && in.GetEtag() != sec.pb.Etag {
		return nil, status.Errorf(codes.FailedPrecondition, "The etag provided in the request does not match the current etag of the secret [%s].", sec.pb.Name)
	}
	next := proto.Clone(sec.pb).(*secretmanagerpb.Secret)
	for _, p := range req.GetUpdateMask().GetPaths() {
		switch p {
		case "labels":
			next.Labels = in.GetLabels()
		case "annotations":
			next.Annotations = in.GetAnnotations()
		default:
			return nil, status.Errorf(codes.InvalidArgument, "update_mask path %q is not supported by the fake", p)
		}
	}
	if err := checkLabels(next.Labels); err != nil {
		return nil, err
	}
	if err := checkAnnotations(next.Annotations); err != nil {
		return nil, err
	}
	next.Etag = s.newEtag()
	sec.pb = next
	return proto.Clone(next).(*secretmanagerpb.Secret), nil
}

// DeleteSecret implements the RPC.
func (s *Server) DeleteSecret(_ context.Context, req *secretmanagerpb.DeleteSecretRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("DeleteSecret"); err != nil {
		return nil, err
	}
	sec, err := s.getSecret(req.GetName())
	if err != nil {
		return nil, err
	}
	if req.GetEtag() != "" && req.GetEtag() != sec.pb.Etag {
		return nil, status.Errorf(codes.FailedPrecondition, "The etag provided in the request does not match the current etag of the secret [%s].", sec.pb.Name)
	}
	delete(s.secrets, sec.pb.Name)
	return &emptypb.Empty{}, nil
}

// AddSecretVersion implements the RPC.
func (s *Server) AddSecretVersion(_ context.Context, req *secretmanagerpb.AddSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("AddSecretVersion"); err != nil {
		return nil, err
	}
	sec, err := s.getSecret(req.GetParent())
	if err != nil {
		return nil, err
	}
	data := req.GetPayload().GetData()
	if s.corruptAdd > 0 && len(data) > 0 {
		s.corruptAdd--
		data = append([]byte(nil), data...)
		data[len(data)/2] ^= 0x01
	}
	if len(data) > MaxPayloadSize {
		return nil, status.Error(codes.InvalidArgument, "payload exceeds 64 KiB")
	}
	var crc *int64
	if c := req.GetPayload().DataCrc32C; c != nil {
		if got := int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))); got != *c {
			return nil, status.Error(codes.InvalidArgument, "Checksum mismatch: data_crc32c does not match the payload.")
		}
		v := *c
		crc = &v
	}
	n := len(sec.versions) + 1
	pb := &secretmanagerpb.SecretVersion{
		Name:                           fmt.Sprintf("%s/versions/%d", sec.pb.Name, n),
		CreateTime:                     timestamppb.New(s.now()),
		State:                          secretmanagerpb.SecretVersion_ENABLED,
		Etag:                           s.newEtag(),
		ClientSpecifiedPayloadChecksum: crc != nil,
	}
	sec.versions = append(sec.versions, &version{pb: pb, data: append([]byte(nil), data...), crc: crc})
	return proto.Clone(pb).(*secretmanagerpb.SecretVersion), nil
}

// GetSecretVersion implements the RPC.
func (s *Server) GetSecretVersion(_ context.Context, req *secretmanagerpb.GetSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("GetSecretVersion"); err != nil {
		return nil, err
	}
	_, v, err := s.resolve(req.GetName())
	if err != nil {
		return nil, err
	}
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

// AccessSecretVersion implements the RPC.
func (s *Server) AccessSecretVersion(_ context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("AccessSecretVersion"); err != nil {
		return nil, err
	}
	_, v, err := s.resolve(req.GetName())
	if err != nil {
		return nil, err
	}
	if st := v.pb.State; st != secretmanagerpb.SecretVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %s state.", v.pb.Name, st)
	}
	c := int64(crc32.Checksum(v.data, crc32.MakeTable(crc32.Castagnoli)))
	data := append([]byte(nil), v.data...)
	if s.corrupt > 0 && len(data) > 0 {
		s.corrupt--
		data[len(data)/2] ^= 0x01
	}
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name:    v.pb.Name,
		Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &c},
	}, nil
}

// CorruptAccess makes the next n AccessSecretVersion answers carry their
// payload with one bit flipped and the data_crc32c of the stored data, as
// data corrupted in transit arrives.
func (s *Server) CorruptAccess(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corrupt = n
}

// CorruptAdd makes the next n AddSecretVersion requests arrive with one
// bit of their payload flipped and the data_crc32c the client computed, as
// data corrupted in transit arrives: a request with a checksum fails its
// check (INVALID_ARGUMENT) and adds nothing.
func (s *Server) CorruptAdd(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corruptAdd = n
}

// ListSecretVersions implements the RPC: newest first, paged.
func (s *Server) ListSecretVersions(_ context.Context, req *secretmanagerpb.ListSecretVersionsRequest) (*secretmanagerpb.ListSecretVersionsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter("ListSecretVersions"); err != nil {
		return nil, err
	}
	sec, err := s.getSecret(req.GetParent())
	if err != nil {
		return nil, err
	}
	all := make([]*secretmanagerpb.SecretVersion, 0, len(sec.versions))
	for i := len(sec.versions) - 1; i >= 0; i-- {
		all = append(all, sec.versions[i].pb)
	}
	start := 0
	if t := req.GetPageToken(); t != "" {
		if start, err = strconv.Atoi(t); err != nil || start < 0 || start > len(all) {
			return nil, status.Error(codes.InvalidArgument, "invalid page token")
		}
	}
	size := int(req.GetPageSize())
	if size <= 0 || size > 25000 {
		size = 25000
	}
	end := min(start+size, len(all))
	resp := &secretmanagerpb.ListSecretVersionsResponse{TotalSize: int32(len(all))}
	for _, v := range all[start:end] {
		resp.Versions = append(resp.Versions, proto.Clone(v).(*secretmanagerpb.SecretVersion))
	}
	if end < len(all) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (s *Server) setState(method, name, etag string, to secretmanagerpb.SecretVersion_State) (*secretmanagerpb.SecretVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enter(method); err != nil {
		return nil, err
	}
	if strings.HasSuffix(name, "/versions/latest") {
		return nil, status.Error(codes.InvalidArgument, "the latest alias cannot change state")
	}
	_, v, err := s.resolve(name)
	if err != nil {
		return nil, err
	}
	if etag != "" && etag != v.pb.Etag {
		return nil, status.Errorf(codes.FailedPrecondition, "The etag provided in the request does not match the current etag of the secret version [%s].", v.pb.Name)
	}
	if err := destroyedIsFinal(v); err != nil {
		return nil, err
	}
	v.pb.State = to
	v.pb.Etag = s.newEtag()
	if to == secretmanagerpb.SecretVersion_DESTROYED {
		v.data = nil
		v.pb.DestroyTime = timestamppb.New(s.now())
	}
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

// destroyedIsFinal refuses any state change of a destroyed version, as
// Secret Manager does: it can be neither enabled, disabled nor destroyed
// again (FAILED_PRECONDITION, a state error, not an etag mismatch).
func destroyedIsFinal(v *version) error {
	if v.pb.State != secretmanagerpb.SecretVersion_DESTROYED {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in DESTROYED state.", v.pb.Name)
}

// DisableSecretVersion implements the RPC.
func (s *Server) DisableSecretVersion(_ context.Context, req *secretmanagerpb.DisableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.setState("DisableSecretVersion", req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DISABLED)
}

// EnableSecretVersion implements the RPC.
func (s *Server) EnableSecretVersion(_ context.Context, req *secretmanagerpb.EnableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.setState("EnableSecretVersion", req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_ENABLED)
}

// DestroySecretVersion implements the RPC.
func (s *Server) DestroySecretVersion(_ context.Context, req *secretmanagerpb.DestroySecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return s.setState("DestroySecretVersion", req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DESTROYED)
}

// SecretNames lists the stored secrets' full names, sorted.
func (s *Server) SecretNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.secrets))
	for n := range s.secrets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// StartTLS serves a new fake over TLS with a fresh self-signed
// certificate for 127.0.0.1 until the test ends. CAFile is then a PEM file
// of that certificate. Every call must carry a valid access token, as on
// Google: one from Credentials, or a service account's self-signed JWT
// (its signature is not checked) that has not expired; see ExpireTokens
// and SetTokenLifetime. A call without a token, or with an expired or
// unknown one, fails with UNAUTHENTICATED (an expired token with
// ErrorInfo reason ACCESS_TOKEN_EXPIRED).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	s := New()
	s.authenticate = true
	certPEM, keyPEM, err := fakeauth.SelfSignedCert("smfake")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.gs = grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})),
		grpc.UnaryInterceptor(s.countErrors))
	secretmanagerpb.RegisterSecretManagerServiceServer(s.gs, s)
	go s.gs.Serve(ln) //nolint:errcheck // ends with Stop
	t.Cleanup(s.Stop)
	return s
}

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

// CAFile is the PEM file of a StartTLS fake's certificate.
func (s *Server) CAFile() string { return s.caFile }
