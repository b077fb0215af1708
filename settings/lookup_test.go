package settings

import (
	"errors"
	"strings"
	"testing"
)

// TestLookupNATSAuth: NATS lookups need a token unless the file says
// nats_auth: permissions; the deprecated nats_require_token never turns
// tokens off.
func TestLookupNATSAuth(t *testing.T) {
	const head = "general_settings:\n  key_management_system: local\nkeyrelay:\n  lookup:\n"
	tests := map[string]struct {
		lookup          string
		permissionsOnly bool
		warning         string // substring of NATSRequireTokenWarning, "" for none
		err             string // substring of the validation error
	}{
		"default":                          {lookup: "    addr: 127.0.0.1:9470\n"},
		"token":                            {lookup: "    nats_auth: token\n"},
		"permissions":                      {lookup: "    nats_auth: permissions\n", permissionsOnly: true},
		"require_token true":               {lookup: "    nats_require_token: true\n", warning: "deprecated"},
		"require_token false keeps tokens": {lookup: "    nats_require_token: false\n", warning: "nats_auth: permissions"},
		"require_token false, permissions": {lookup: "    nats_require_token: false\n    nats_auth: permissions\n", permissionsOnly: true, warning: "nats_auth: permissions decides"},
		"unknown mode":                     {lookup: "    nats_auth: none\n", err: "keyrelay.lookup.nats_auth"},
		"empty mode":                       {lookup: "    nats_auth: \"\"\n", err: "keyrelay.lookup.nats_auth"},
		"contradiction":                    {lookup: "    nats_require_token: true\n    nats_auth: permissions\n", err: "keyrelay.lookup.nats_require_token"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, _, err := Parse([]byte(head+tc.lookup), noEnv)
			if tc.err != "" {
				var fe *FieldError
				if err == nil || !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := c.Keyrelay.Lookup
			if got := l.NATSPermissionsOnly(); got != tc.permissionsOnly {
				t.Errorf("NATSPermissionsOnly = %v, want %v", got, tc.permissionsOnly)
			}
			w := l.NATSRequireTokenWarning()
			if (tc.warning == "") != (w == "") || !strings.Contains(w, tc.warning) {
				t.Errorf("warning = %q, want one containing %q", w, tc.warning)
			}
		})
	}
}

// TestLookupDefaultsNeedTokens: the embedded default answers no lookup
// without a token.
func TestLookupDefaultsNeedTokens(t *testing.T) {
	l := Default().Keyrelay.Lookup
	if l.NATSAuth != LookupNATSAuthToken || l.NATSPermissionsOnly() || len(l.Clients) != 0 {
		t.Fatalf("default lookup: nats_auth %q, %d clients", l.NATSAuth, len(l.Clients))
	}
}
