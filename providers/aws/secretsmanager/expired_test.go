package secretsmanager_test

import (
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// AWS answers an expired session token with HTTP 403 in several places
// (STS's ExpiredTokenException, the query services' ExpiredToken): the
// credentials expired, a retry signs with refreshed ones. The 403 must not
// turn it into a permanent access denial that dead-letters the event.
func TestExpiredTokenWith403IsRetryable(t *testing.T) {
	for _, code := range []string{"ExpiredTokenException", "ExpiredToken", "RequestExpired"} {
		t.Run(code, func(t *testing.T) {
			f := kumofront.Start(t)
			p := open(t, f, map[string]string{"max_attempts": "1"})
			name := uniq("expired")
			mustPut(t, p, name, "v0", "e0")
			f.Inject(kumofront.Fault{Action: "PutSecretValue", SecretID: name, Status: 403, Code: code,
				Message: "The security token included in the request is expired"})
			_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte(secretValue), IdempotencyKey: "e1", Owner: owner})
			checkErr(t, err, providers.Retryable, providers.ErrAccessDenied, code, 0)
		})
	}
}
