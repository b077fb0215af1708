package vault

import (
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestVaultConfigFromOptions(t *testing.T) {
	tests := map[string]struct {
		opts  map[string]string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		"defaults with a token from the environment": {
			env: map[string]string{EnvToken: "hvs.x"},
			check: func(t *testing.T, c Config) {
				want := Config{Addr: DefaultAddr, Token: "hvs.x", Mount: DefaultMount, DataKey: DefaultDataKey,
					AppRoleMountPath: DefaultAppRoleMountPath, CertMountPath: DefaultCertMountPath, DeleteMode: DeleteSoft,
					EventHistory: DefaultEventHistory, Timeout: DefaultTimeout}
				if c != want {
					t.Errorf("got %#v\nwant %#v", c, want)
				}
				if c.Method() != AuthToken {
					t.Errorf("Method = %q", c.Method())
				}
			},
		},
		"LiteLLM environment": {
			env: map[string]string{
				EnvAddr: "https://vault.example.com:8200/", EnvNamespace: "admin", EnvMountName: "/kv/",
				EnvPathPrefix: "litellm/", EnvAppRoleRoleID: "role", EnvAppRoleSecretID: "sid", EnvAppRoleMountPath: "ar",
			},
			check: func(t *testing.T, c Config) {
				if c.Addr != "https://vault.example.com:8200" || c.Namespace != "admin" || c.LoginNamespace != "admin" ||
					c.Mount != "kv" || c.PathPrefix != "litellm" || c.AppRoleMountPath != "ar" || c.Method() != AuthAppRole {
					t.Errorf("got %v", c)
				}
			},
		},
		"separate login and secret namespaces": {
			env: map[string]string{EnvToken: "t", EnvNamespace: "admin", EnvLoginNamespace: "root-ns", EnvSecretNamespace: "admin/teams/a"},
			check: func(t *testing.T, c Config) {
				if c.LoginNamespace != "root-ns" || c.Namespace != "admin/teams/a" {
					t.Errorf("login %q secret %q", c.LoginNamespace, c.Namespace)
				}
			},
		},
		"team options override the environment": {
			opts: map[string]string{OptionNamespace: "teams/b", OptionMount: "kv-prod", OptionPathPrefix: "virtual-keys", OptionDataKey: "password"},
			env:  map[string]string{EnvToken: "t", EnvNamespace: "admin", EnvMountName: "secret"},
			check: func(t *testing.T, c Config) {
				if c.Namespace != "teams/b" || c.LoginNamespace != "admin" || c.Mount != "kv-prod" || c.PathPrefix != "virtual-keys" || c.DataKey != "password" {
					t.Errorf("got %v", c)
				}
			},
		},
		"LiteLLM field names as aliases": {
			opts: map[string]string{"vault_addr": "http://v:8200", "vault_token": "t", "vault_mount_name": "kv", "vault_cert_role": "r"},
			check: func(t *testing.T, c Config) {
				if c.Addr != "http://v:8200" || c.Token != "t" || c.Mount != "kv" || c.CertRole != "r" {
					t.Errorf("got %v", c)
				}
			},
		},
		"LiteLLM priority: approle over cert over token": {
			env: map[string]string{EnvToken: "t", EnvClientCert: "c.pem", EnvClientKey: "k.pem", EnvAddr: "https://v"},
			check: func(t *testing.T, c Config) {
				if c.Method() != AuthCert {
					t.Errorf("Method = %q, want cert", c.Method())
				}
			},
		},
		"explicit auth method": {
			opts: map[string]string{OptionAuthMethod: "Token", OptionToken: "t"},
			env:  map[string]string{EnvAppRoleRoleID: "r", EnvAppRoleSecretID: "s"},
			check: func(t *testing.T, c Config) {
				if c.Method() != AuthToken {
					t.Errorf("Method = %q", c.Method())
				}
			},
		},
		"numbers, durations and booleans": {
			opts: map[string]string{OptionToken: "t", OptionMaxVersions: "50", OptionEventHistory: "20", OptionTimeout: "5s",
				OptionMaxRetries: "2", OptionRateLimit: "12.5", OptionTLSSkipVerify: "true", OptionDeleteMode: "Destroy"},
			check: func(t *testing.T, c Config) {
				if c.MaxVersions != 50 || c.EventHistory != 20 || c.Timeout != 5*time.Second || c.MaxRetries != 2 ||
					c.RateLimit != 12.5 || c.RateBurst != 13 || !c.TLSSkipVerify || c.DeleteMode != DeleteDestroy {
					t.Errorf("got %+v", c)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := ConfigFromOptions(tc.opts, envMap(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestVaultConfigValidateNamesTheField(t *testing.T) {
	tests := map[string]struct {
		opts map[string]string
		env  map[string]string
		want string
	}{
		"no credentials":          {want: "Config.Token"},
		"bad scheme":              {opts: map[string]string{OptionAddr: "ftp://x", OptionToken: "t"}, want: "Config.Addr"},
		"no host":                 {opts: map[string]string{OptionAddr: "http://", OptionToken: "t"}, want: "Config.Addr"},
		"query in addr":           {opts: map[string]string{OptionAddr: "http://v?x=1", OptionToken: "t"}, want: "Config.Addr"},
		"dotdot mount":            {opts: map[string]string{OptionMount: "a/../b", OptionToken: "t"}, want: "Config.Mount"},
		"empty segment prefix":    {opts: map[string]string{OptionPathPrefix: "a//b", OptionToken: "t"}, want: "Config.PathPrefix"},
		"control char namespace":  {opts: map[string]string{OptionNamespace: "a\x01", OptionToken: "t"}, want: "Config.Namespace"},
		"delete mode":             {opts: map[string]string{OptionDeleteMode: "shred", OptionToken: "t"}, want: "Config.DeleteMode"},
		"data field of the event": {opts: map[string]string{OptionDataKey: "keyrelay-event", OptionToken: "t"}, want: "Config.DataKey"},
		"event history":           {opts: map[string]string{OptionEventHistory: "40", OptionToken: "t"}, want: "Config.EventHistory"},
		"negative max versions":   {opts: map[string]string{OptionMaxVersions: "-1", OptionToken: "t"}, want: "Config.MaxVersions"},
		"approle without secret":  {opts: map[string]string{OptionAuthMethod: "approle", OptionAppRoleRoleID: "r"}, want: "Config.AppRoleSecretID"},
		"cert without key":        {opts: map[string]string{OptionClientCert: "c.pem", OptionToken: "t"}, want: "Config.ClientCert"},
		"cert auth over http":     {opts: map[string]string{OptionClientCert: "c.pem", OptionClientKey: "k.pem"}, want: "https"},
		"unknown auth method":     {opts: map[string]string{OptionAuthMethod: "kerberos", OptionToken: "t"}, want: "Config.AuthMethod"},
		"not a number":            {opts: map[string]string{OptionMaxRetries: "two", OptionToken: "t"}, want: `"max_retries"`},
		"not a duration":          {opts: map[string]string{OptionTimeout: "5", OptionToken: "t"}, want: `"timeout"`},
		"not a boolean":           {opts: map[string]string{OptionTLSSkipVerify: "yes please", OptionToken: "t"}, want: `"tls_skip_verify"`},
		"data key with a newline": {opts: map[string]string{OptionDataKey: "a\nb", OptionToken: "t"}, want: "Config.DataKey"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ConfigFromOptions(tc.opts, envMap(tc.env))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

func TestVaultConfigNeverShowsCredentials(t *testing.T) {
	c, err := ConfigFromOptions(map[string]string{OptionToken: "hvs.SECRET-TOKEN", OptionAppRoleRoleID: "role", OptionAppRoleSecretID: "SECRET-ID"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{c.String(), c.GoString()} {
		if strings.Contains(s, "SECRET") {
			t.Errorf("config text shows a credential: %s", s)
		}
	}
	_, err = ConfigFromOptions(map[string]string{OptionAuthMethod: "approle", OptionAppRoleSecretID: "SECRET-ID", OptionAddr: "gopher://x"}, nil)
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("validation error %v", err)
	}
}

func TestVaultCheckPath(t *testing.T) {
	good := []string{"a", "litellm/team-1/key-1", "a.b", "A/B", "a--b", "clé/鍵", "with space", "q?#%"}
	bad := []string{"", "/a", "a/", "a//b", "..", "a/../b", "a..b", "./a", "a/./b", "a\x00b", "a\nb", "a\x7fb", string([]byte{0xff}), strings.Repeat("a", MaxNameLength+1)}
	for _, p := range good {
		if err := checkPath(p); err != nil {
			t.Errorf("checkPath(%q): %v", p, err)
		}
	}
	for _, p := range bad {
		if err := checkPath(p); err == nil {
			t.Errorf("checkPath(%q): no error", p)
		}
	}
}

func TestVaultPaths(t *testing.T) {
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"default":        {Config{Mount: "secret"}, "secret/data/litellm/k"},
		"prefix":         {Config{Mount: "secret", PathPrefix: "team-a"}, "secret/data/team-a/litellm/k"},
		"namespace":      {Config{Mount: "kv", Namespace: "admin/teams/a"}, "admin/teams/a/kv/data/litellm/k"},
		"all":            {Config{Mount: "kv", Namespace: "ns", PathPrefix: "p/q"}, "ns/kv/data/p/q/litellm/k"},
		"metadata check": {Config{Mount: "kv", Namespace: "ns", PathPrefix: "p"}, "ns/kv/data/p/litellm/k"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ps := tc.cfg.pathsFor("litellm/k")
			if got := ps.data(); got != tc.want {
				t.Errorf("data path %q, want %q", got, tc.want)
			}
			if got, want := ps.metadata(), strings.Replace(tc.want, "/data/", "/metadata/", 1); got != want {
				t.Errorf("metadata path %q, want %q", got, want)
			}
		})
	}
}
