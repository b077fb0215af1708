package settings

import (
	"errors"
	"strings"
	"testing"
)

// TestLookupNATSAuth: NATS lookups need a token unless the file says
// nats_auth: permissions, which only an external NATS may say; the
// deprecated nats_require_token never turns tokens off.
func TestLookupNATSAuth(t *testing.T) {
	const head = "general_settings:\n  key_management_system: local\nkeyrelay:\n"
	const external = "  nats:\n    url: nats://nats-1:4222\n"
	tests := map[string]struct {
		external        bool
		lookup          string
		permissionsOnly bool
		warning         string // substring of NATSRequireTokenWarning, "" for none
		err             string // substring of the validation error
	}{
		"default":                          {lookup: "    addr: 127.0.0.1:9470\n"},
		"token":                            {lookup: "    nats_auth: token\n"},
		"permissions":                      {external: true, lookup: "    nats_auth: permissions\n", permissionsOnly: true},
		"permissions, embedded":            {lookup: "    nats_auth: permissions\n", err: "keyrelay.lookup.nats_auth: permissions needs an external NATS"},
		"permissions, embedded, nats off":  {lookup: "    nats: false\n    nats_auth: permissions\n", err: "keyrelay.lookup.nats_auth: permissions needs an external NATS"},
		"require_token true":               {lookup: "    nats_require_token: true\n", warning: "deprecated"},
		"require_token false keeps tokens": {lookup: "    nats_require_token: false\n", warning: "nats_auth: permissions"},
		"require_token false, permissions": {external: true, lookup: "    nats_require_token: false\n    nats_auth: permissions\n", permissionsOnly: true, warning: "nats_auth: permissions decides"},
		"unknown mode":                     {lookup: "    nats_auth: none\n", err: "keyrelay.lookup.nats_auth"},
		"empty mode":                       {lookup: "    nats_auth: \"\"\n", err: "keyrelay.lookup.nats_auth"},
		"contradiction":                    {external: true, lookup: "    nats_require_token: true\n    nats_auth: permissions\n", err: "keyrelay.lookup.nats_require_token"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := head
			if tc.external {
				in += external
			}
			c, _, err := Parse([]byte(in+"  lookup:\n"+tc.lookup), noEnv)
			if err == nil {
				err = c.Validate() // as the commands do after their flags
			}
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

// TestEmbeddedChecksWaitForFlags: a file that leaves nats.url empty may
// get it from --nats-url, so Parse leaves the checks that hold only on the
// embedded server to the Validate the commands run after their flags:
// refused on the embedded server, accepted once the URL names an external
// NATS.
func TestEmbeddedChecksWaitForFlags(t *testing.T) {
	tests := map[string]struct{ yaml, err string }{
		"nats_auth permissions": {yaml: "keyrelay:\n  lookup:\n    nats_auth: permissions\n",
			err: "keyrelay.lookup.nats_auth: permissions needs an external NATS"},
		"short nats.token": {yaml: "keyrelay:\n  nats:\n    token: short-token\n",
			err: "keyrelay.nats.token: is shorter than 16 bytes"},
		"nats.token read as a bcrypt hash": {yaml: "keyrelay:\n  nats:\n    token: \"$2a$11$a-token-long-enough\"\n",
			err: `keyrelay.nats.token: starts with "$2"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, _, err := Parse([]byte(tc.yaml), noEnv)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate on the embedded server: %v, want %q", err, tc.err)
			}
			c.Keyrelay.NATS.URL = "nats://nats-1:4222" // --nats-url
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate on an external NATS: %v", err)
			}
		})
	}
}

// TestLookupNATSDefault: NATS lookups are on by default with an external
// NATS and off on the embedded server, where keyrelay.lookup.nats: true
// turns them on anyway.
func TestLookupNATSDefault(t *testing.T) {
	const head = "general_settings:\n  key_management_system: local\nkeyrelay:\n"
	tests := map[string]struct {
		nats   string
		lookup string
		on     bool
	}{
		"embedded, unset":         {},
		"embedded, null":          {lookup: "    nats: ~\n"},
		"embedded, true":          {lookup: "    nats: true\n", on: true},
		"embedded, false":         {lookup: "    nats: false\n"},
		"external, unset":         {nats: "    url: nats://nats-1:4222\n", on: true},
		"external, true":          {nats: "    url: nats://nats-1:4222\n", lookup: "    nats: true\n", on: true},
		"external, false":         {nats: "    url: nats://nats-1:4222\n", lookup: "    nats: false\n"},
		"embedded with its token": {nats: "    token: a-token-of-16-bytes-or-more\n"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := head
			if tc.nats != "" {
				in += "  nats:\n" + tc.nats
			}
			if tc.lookup != "" {
				in += "  lookup:\n" + tc.lookup
			}
			c, _, err := Parse([]byte(in), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Keyrelay.Lookup.NATSEnabled(c.Keyrelay.NATS.IsEmbedded()); got != tc.on {
				t.Fatalf("NATSEnabled = %v, want %v", got, tc.on)
			}
		})
	}
}

// TestLookupDefaultsNeedTokens: the embedded default answers no lookup
// without a token, and none over NATS.
func TestLookupDefaultsNeedTokens(t *testing.T) {
	c := Default()
	l := c.Keyrelay.Lookup
	if l.NATSAuth != LookupNATSAuthToken || l.NATSPermissionsOnly() || len(l.Clients) != 0 {
		t.Fatalf("default lookup: nats_auth %q, %d clients", l.NATSAuth, len(l.Clients))
	}
	if !c.Keyrelay.NATS.IsEmbedded() || l.NATS != nil || l.NATSEnabled(true) {
		t.Fatalf("default lookup: NATS lookups on the embedded server (nats %v)", l.NATS)
	}
}

// TestLookupMaxLoadsPerBackend: max_loads_per_backend defaults to its
// constant capped at half of max_concurrent_loads, and may not exceed
// max_concurrent_loads.
func TestLookupMaxLoadsPerBackend(t *testing.T) {
	const head = "general_settings:\n  key_management_system: local\nkeyrelay:\n  lookup:\n"
	tests := map[string]struct {
		lookup string
		want   int    // LoadsPerBackend
		err    string // substring of the validation error
	}{
		"default":                     {want: DefaultLookupMaxLoadsPerBackend},
		"default below the pool":      {lookup: "    max_concurrent_loads: 4\n", want: 2},
		"default with a pool of one":  {lookup: "    max_concurrent_loads: 1\n", want: 1},
		"set":                         {lookup: "    max_loads_per_backend: 8\n", want: 8},
		"zero is the default":         {lookup: "    max_loads_per_backend: 0\n", want: DefaultLookupMaxLoadsPerBackend},
		"equal to the pool":           {lookup: "    max_concurrent_loads: 32\n    max_loads_per_backend: 32\n", want: 32},
		"more than the pool":          {lookup: "    max_concurrent_loads: 8\n    max_loads_per_backend: 9\n", err: "keyrelay.lookup.max_loads_per_backend: 9 is more than max_concurrent_loads (8)"},
		"more than the default pool":  {lookup: "    max_loads_per_backend: 65\n", err: "keyrelay.lookup.max_loads_per_backend"},
		"negative":                    {lookup: "    max_loads_per_backend: -1\n", err: "keyrelay.lookup.max_loads_per_backend: must not be negative"},
		"bad pool, no second message": {lookup: "    max_concurrent_loads: 0\n    max_loads_per_backend: 4\n", err: "keyrelay.lookup.max_concurrent_loads"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, _, err := Parse([]byte(head+tc.lookup+"    ttl: 5m\n"), noEnv)
			if err == nil {
				err = c.Validate()
			}
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
			if got := c.Keyrelay.Lookup.LoadsPerBackend(); got != tc.want {
				t.Fatalf("LoadsPerBackend = %d, want %d", got, tc.want)
			}
		})
	}
}
