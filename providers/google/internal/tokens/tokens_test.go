package tokens

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"

	"cloud.google.com/go/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type tokenFunc func(context.Context) (*auth.Token, error)

func (f tokenFunc) Token(ctx context.Context) (*auth.Token, error) { return f(ctx) }

// counting returns a builder of credentials whose tokens fail with err
// (nil: succeed), and the number of builds.
func counting(err error) (func() (*auth.Credentials, error), *int) {
	n := 0
	return func() (*auth.Credentials, error) {
		n++
		return auth.NewCredentials(&auth.CredentialsOptions{TokenProvider: tokenFunc(func(context.Context) (*auth.Token, error) {
			if err != nil {
				return nil, err
			}
			return &auth.Token{Value: "t", Type: "Bearer"}, nil
		})}), nil
	}, &n
}

// A credential refused every time is rebuilt RefreshBurst times, then no
// more: each call is then sent once.
func TestRefreshesAreLimited(t *testing.T) {
	build, builds := counting(nil)
	s, err := New(build, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	refuse := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		sent++
		return status.Error(codes.Unauthenticated, "refused")
	}
	for range 2 * RefreshBurst {
		if err := s.Intercept(context.Background(), "/m", nil, nil, nil, refuse); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Intercept = %v", err)
		}
	}
	if *builds != 1+RefreshBurst || sent != 2*RefreshBurst+RefreshBurst {
		t.Fatalf("%d builds, %d calls sent; want %d and %d", *builds, sent, 1+RefreshBurst, 3*RefreshBurst)
	}
}

// Other errors are not retried.
func TestOnlyUnauthenticatedIsRetried(t *testing.T) {
	build, builds := counting(nil)
	s, _ := New(build, "test", nil)
	for _, code := range []codes.Code{codes.OK, codes.PermissionDenied, codes.Unavailable} {
		sent := 0
		_ = s.Intercept(context.Background(), "/m", nil, nil, nil, func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
			sent++
			return status.Error(code, "x")
		})
		if sent != 1 {
			t.Errorf("%v: sent %d times", code, sent)
		}
	}
	if *builds != 1 {
		t.Errorf("%d builds", *builds)
	}
}

// A token that cannot be fetched for a passing reason is UNAVAILABLE; a
// token endpoint refusing the credential is left as it is (gRPC makes it
// UNAUTHENTICATED).
func TestTokenFetchErrors(t *testing.T) {
	for name, c := range map[string]struct {
		err  error
		want codes.Code
	}{
		"503":           {&auth.Error{Response: &http.Response{StatusCode: http.StatusServiceUnavailable}}, codes.Unavailable},
		"429":           {&auth.Error{Response: &http.Response{StatusCode: http.StatusTooManyRequests}}, codes.Unavailable},
		"network":       {&net.OpError{Op: "dial", Err: errors.New("connection refused")}, codes.Unavailable},
		"invalid_grant": {&auth.Error{Response: &http.Response{StatusCode: http.StatusBadRequest}}, codes.Unknown},
		"deadline":      {context.DeadlineExceeded, codes.DeadlineExceeded},
	} {
		t.Run(name, func(t *testing.T) {
			build, _ := counting(c.err)
			s, _ := New(build, "test", nil)
			_, err := s.Token(context.Background())
			if got := status.Code(err); got != c.want {
				t.Fatalf("Token() = %v (code %v), want %v", err, got, c.want)
			}
		})
	}
}
