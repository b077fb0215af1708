// Package tokens holds the access tokens of the Google providers
// (google_secret_manager, google_kms): a token provider whose cached token
// can be dropped, and a gRPC interceptor that retries a call once with a
// new token when Google refuses the one it carried.
//
// # Guarantees
//
//   - Google answers a call whose OAuth access token it no longer accepts
//     (expired by Google's clock, revoked, or expired early) with
//     UNAUTHENTICATED, google.rpc.ErrorInfo reason ACCESS_TOKEN_EXPIRED.
//     The auth library cannot prevent it: its cache refreshes by the local
//     clock, and keeps handing out the token Google refused until it
//     expires locally. On such an answer Source.Intercept rebuilds the
//     credentials (a new cache, so a new token) and sends the call once
//     more; UNAUTHENTICATED on the new token is returned as it is, for the
//     provider to classify as access denied.
//   - Calls that failed on the same token share one rebuild. Rebuilds
//     after that are limited (RefreshBurst, then one per RefreshEvery): a
//     credential Google refuses every time does not turn each call into a
//     token request.
//   - A token that cannot be fetched for a passing reason (the token
//     endpoint or metadata server unreachable or answering 5xx, 408 or
//     429) fails the call with UNAVAILABLE, not with the UNAUTHENTICATED
//     gRPC gives any credentials error, so that it is retried rather than
//     taken for a credential Google refused.
package tokens

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Rebuilds after UNAUTHENTICATED are limited to RefreshBurst at once and
// one per RefreshEvery after that.
const (
	RefreshBurst = 5
	RefreshEvery = 5 * time.Second
)

// Detect returns the builder of the credentials the Google clients use by
// default: the service-account key in credentialsFile when it is set (a
// file of another type is refused), else Application Default Credentials.
// Service accounts sign their own JWTs for scopes, as the clients ask for
// (no call to the token endpoint). Each call reads the credentials anew,
// so a key file rotated on disk is picked up by the next rebuild.
func Detect(credentialsFile string, scopes []string) func() (*auth.Credentials, error) {
	return func() (*auth.Credentials, error) {
		opts := &credentials.DetectOptions{Scopes: scopes, UseSelfSignedJWT: true}
		if credentialsFile != "" {
			return credentials.NewCredentialsFromFile(credentials.ServiceAccount, credentialsFile, opts)
		}
		return credentials.DetectDefault(opts)
	}
}

// Source is an auth.TokenProvider over credentials it can rebuild. It is
// safe for concurrent use.
type Source struct {
	build    func() (*auth.Credentials, error)
	provider string
	log      *zap.Logger
	lim      *rate.Limiter
	first    *auth.Credentials // project, quota project, universe domain

	mu  sync.Mutex
	tp  auth.TokenProvider
	gen uint64
}

// New builds the credentials once (an error here is a configuration
// error) and returns a Source over them. provider names the provider in
// log lines; log may be nil.
func New(build func() (*auth.Credentials, error), provider string, log *zap.Logger) (*Source, error) {
	c, err := build()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Source{build: build, provider: provider, log: log, first: c, tp: c,
		lim: rate.NewLimiter(rate.Every(RefreshEvery), RefreshBurst)}, nil
}

// Credentials returns the credentials to give the client
// (option.WithAuthCredentials): its tokens come from s, its other
// properties from the credentials first built.
func (s *Source) Credentials() *auth.Credentials {
	return auth.NewCredentials(&auth.CredentialsOptions{
		TokenProvider:          s,
		JSON:                   s.first.JSON(),
		ProjectIDProvider:      auth.CredentialsPropertyFunc(s.first.ProjectID),
		QuotaProjectIDProvider: auth.CredentialsPropertyFunc(s.first.QuotaProjectID),
		UniverseDomainProvider: auth.CredentialsPropertyFunc(s.first.UniverseDomain),
	})
}

func (s *Source) current() (auth.TokenProvider, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tp, s.gen
}

// Token implements auth.TokenProvider: the current credentials' token. A
// fetch that failed for a passing reason is a gRPC UNAVAILABLE status.
func (s *Source) Token(ctx context.Context) (*auth.Token, error) {
	tp, _ := s.current()
	t, err := tp.Token(ctx)
	if err == nil {
		return t, nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, status.FromContextError(err).Err()
	}
	if passing(err) {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return nil, status.Error(codes.Unavailable, "cannot get an access token: "+msg)
	}
	return nil, err
}

// passing reports whether a token fetch error may pass: anything but an
// answer of the token endpoint refusing the credential (a 4xx other than
// 408 and 429).
func passing(err error) bool {
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		return ae.Temporary()
	}
	return true
}

// refresh rebuilds the credentials used by generation gen and reports
// whether a token other than gen's is there to retry with.
func (s *Source) refresh(gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return true
	}
	if !s.lim.Allow() {
		s.log.Warn("google rejected a fresh access token again; not refreshing", zap.String("provider", s.provider))
		return false
	}
	c, err := s.build()
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		s.log.Warn("google: could not rebuild the credentials", zap.String("provider", s.provider), zap.String("reason", msg))
		return false
	}
	s.tp, s.gen = c, s.gen+1
	s.log.Info("google answered UNAUTHENTICATED: dropped the cached access token, retrying with a new one", zap.String("provider", s.provider))
	return true
}

// Intercept is a grpc.UnaryClientInterceptor: a call answered
// UNAUTHENTICATED goes once more with a new token, unless its context is
// done or no new token can be had.
func (s *Source) Intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	_, gen := s.current()
	err := invoker(ctx, method, req, reply, cc, opts...)
	if status.Code(err) != codes.Unauthenticated || ctx.Err() != nil || !s.refresh(gen) {
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

var _ auth.TokenProvider = (*Source)(nil)
