package seal_test

import (
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/seal"
)

// TestSanitizeBase64URL: "-" and "_" are base64url characters, so a token
// holding them (a JWT, a URL-safe key, a gateway key) is redacted whole;
// no part of it past a "-" or "_" survives. Text made of words, however
// they are joined, stays readable.
func TestSanitizeBase64URL(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	redacted := map[string]struct {
		in, want string
		paths    bool
		secrets  []string // must not appear in the output, not even in part
	}{
		"base64url with -": {in: "token Zm9vYmFy-YmF6cXV4_cXV1eHpv-end is bad", want: "token [redacted] is bad",
			secrets: []string{"Zm9vYmFy", "YmF6cXV4", "cXV1eHpv"}},
		"base64url tail after _": {in: "bad key SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c!", want: "bad key [redacted]!",
			secrets: []string{"adQssw5c", "SflKxwRJ"}},
		"gateway key, - in its body": {in: "value sk-Ab3dE_fGh12IjK-lMnOpQr rejected", want: "value [redacted] rejected",
			secrets: []string{"Ab3dE", "fGh12IjK", "lMnOpQr"}},
		"gateway key, with paths": {in: "key sk-9xQwErTyUiOp-AsDfGhJk", paths: true, want: "key [redacted]",
			secrets: []string{"9xQwErTyUiOp", "AsDfGhJk"}},
		"hex": {in: "digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 differs", want: "digest [redacted] differs",
			secrets: []string{"9f86d081"}},
		"hex, dashed in odd groups": {in: "id 9f86d081884c-7d659a2feaa0-c55ad015a3bf end", want: "id [redacted] end",
			secrets: []string{"9f86d081884c", "c55ad015a3bf"}},
		"JWT, dotted parts": {in: "bearer " + jwt + " expired", want: "bearer [redacted] expired",
			secrets: []string{"eyJhbGci", "eyJzdWIi", "SflKxwRJ", "adQssw5c"}},
		"JWT, with paths":            {in: "auth " + jwt, paths: true, want: "auth [redacted]", secrets: []string{"adQssw5c"}},
		"std base64":                 {in: "blob AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHw== end", want: "blob [redacted] end"},
		"base64url at the threshold": {in: "x Ab_Cd-Ef3gH4iJ5kL6mN7 y", want: "x [redacted] y", secrets: []string{"Ef3gH4iJ5kL6mN7"}},
		// Every segment under the threshold and made of letters and
		// digits in alternating case: camelCase humps have two lowercase
		// letters or more, so none of these is a word.
		"gateway key, alternating case": {in: "key sk-xY3_kLm9-AbCdEfGhIj used", want: "key [redacted] used",
			secrets: []string{"xY3", "kLm9", "AbCdEfGhIj"}},
	}
	for name, c := range redacted {
		t.Run(name, func(t *testing.T) {
			got := seal.Sanitize(c.in, c.paths)
			if got != c.want {
				t.Errorf("Sanitize(%q, %v) = %q, want %q", c.in, c.paths, got, c.want)
			}
			for _, s := range c.secrets {
				if strings.Contains(got, s) {
					t.Errorf("%q survives in %q", s, got)
				}
			}
		})
	}

	readable := map[string]struct {
		in    string
		paths bool
	}{
		"ordinary words":                      {in: "The key was not found; check the request and try again."},
		"hyphenated names":                    {in: "key ring keyrelay-production-key-ring-01 in us-east-1 is disabled"},
		"snake_case":                          {in: "error invalid_client_secret_value: token_expired (FAILED_PRECONDITION)"},
		"upper snake":                         {in: "status RESOURCE_EXHAUSTED_QUOTA_LIMIT_REACHED"},
		"camel and dashes":                    {in: "x-amz-request-id AccessDenied-keyRings-cryptoKeyVersions"},
		"a permission name, two-letter humps": {in: "Permission cloudkms.cryptoKeyVersions.useToDecrypt denied"},
		"host names":                          {in: "dial tcp: lookup kms.us-east-1.amazonaws.com: no such host"},
		"resource path":                       {in: "projects/my-project/locations/europe-west1/keyRings/keyrelay-ring/cryptoKeys/keyrelay_primary_key", paths: true},
		"AWS key ARN":                         {in: "Key 'arn:aws:kms:us-east-1:111122223333:key/0b7f4a52-9c3e-4d1a-8e6f-2a1b3c4d5e01' does not exist"},
		"alias ARN":                           {in: "alias/my-application-secrets-key-alias is pending deletion"},
		"numbers and dates":                   {in: "retry after 2026-12-07T14:05:42Z (attempt 3 of 5, 1234567890 ms)"},
		"short mixed runs":                    {in: "kid k1 alg A256GCM v2 Hw== ok"},
	}
	for name, c := range readable {
		t.Run(name, func(t *testing.T) {
			if got := seal.Sanitize(c.in, c.paths); got != c.in {
				t.Errorf("Sanitize(%q, %v) = %q, want it unchanged", c.in, c.paths, got)
			}
		})
	}
}
