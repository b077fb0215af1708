package settings

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

func ptr[T any](v T) *T { return &v }

const resolveYAML = `
general_settings:
  key_management_system: hashicorp_vault
  key_management_settings:
    store_virtual_keys: true
    prefix_for_stored_virtual_keys: "litellm/"
    description: global description
    tags: {Environment: Prod, Owner: platform}
    aws_region_name: us-east-1
    aws_role_name: arn:aws:iam::1:role/global
    replica_regions: [us-west-2, eu-west-1]
keyrelay:
  providers:
    hashicorp_vault: {namespace: admin, mount: secret}
    aws_secret_manager: {aws_region_name: eu-central-1, kms_key_id: alias/keys}
`

func TestResolve(t *testing.T) {
	c, _ := mustParse(t, resolveYAML, noEnv)
	global := Resolved{
		Backend:          "hashicorp_vault",
		StoreVirtualKeys: true,
		Prefix:           "litellm/",
		AccessMode:       "read_and_write",
		NameTemplate:     DefaultNameTemplate,
		Description:      "global description",
		Tags:             map[string]string{"Environment": "Prod", "Owner": "platform"},
		Options:          map[string]string{"namespace": "admin", "mount": "secret"},
		KeepPrevious:     true, // the default, keyrelay.rotation.retire_previous_after: keep
	}
	tests := map[string]struct {
		team *events.TeamSettings
		want func(r *Resolved)
	}{
		"nil team is global":   {nil, func(*Resolved) {}},
		"empty team is global": {&events.TeamSettings{}, func(*Resolved) {}},
		"scalars overridden": {
			&events.TeamSettings{
				StoreVirtualKeys: ptr(false), Prefix: ptr("team-a/"), AccessMode: "read_only",
				NameTemplate: LiteLLMNameTemplate, Description: "team a",
			},
			func(r *Resolved) {
				r.StoreVirtualKeys, r.Prefix, r.AccessMode = false, "team-a/", "read_only"
				r.NameTemplate, r.Description = LiteLLMNameTemplate, "team a"
			},
		},
		"team retires previous versions": {
			&events.TeamSettings{RetirePreviousAfter: "36h"},
			func(r *Resolved) { r.KeepPrevious, r.RetirePreviousAfter = false, 36*time.Hour },
		},
		"team keeps them explicitly": {&events.TeamSettings{RetirePreviousAfter: "keep"}, func(*Resolved) {}},
		"empty prefix override": {
			&events.TeamSettings{Prefix: ptr("")},
			func(r *Resolved) { r.Prefix = "" },
		},
		"options and tags merged key by key": {
			&events.TeamSettings{
				Tags:    map[string]string{"Owner": "team-a", "CostCenter": "42"},
				Options: map[string]string{"namespace": "admin/team-a", "path_prefix": "a"},
			},
			func(r *Resolved) {
				r.Tags = map[string]string{"Environment": "Prod", "Owner": "team-a", "CostCenter": "42"}
				r.Options = map[string]string{"namespace": "admin/team-a", "mount": "secret", "path_prefix": "a"}
			},
		},
		"team backend takes that backend's options": {
			&events.TeamSettings{Backend: "azure_key_vault", Options: map[string]string{"vault_url": "https://v.vault.azure.net"}},
			func(r *Resolved) {
				r.Backend = "azure_key_vault"
				r.Options = map[string]string{"vault_url": "https://v.vault.azure.net"}
			},
		},
		"aws layers: LiteLLM settings < providers < team": {
			&events.TeamSettings{Backend: "aws_secret_manager", Options: map[string]string{"aws_role_name": "arn:aws:iam::2:role/team"}},
			func(r *Resolved) {
				r.Backend = "aws_secret_manager"
				r.Options = map[string]string{
					"aws_region_name": "eu-central-1", // keyrelay.providers beats key_management_settings
					"aws_role_name":   "arn:aws:iam::2:role/team",
					"replica_regions": "us-west-2,eu-west-1",
					"kms_key_id":      "alias/keys",
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			want := global
			want.Tags = copyMap(global.Tags)
			want.Options = copyMap(global.Options)
			tc.want(&want)
			got := c.Resolve(tc.team)
			// The two option layers are checked by TestProviderOptions.
			got.GlobalOptions, got.TeamOptions = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Resolve =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func copyMap(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestResolveDoesNotShareMaps(t *testing.T) {
	c, _ := mustParse(t, resolveYAML, noEnv)
	team := &events.TeamSettings{Tags: map[string]string{"a": "b"}, Options: map[string]string{"c": "d"}}
	r := c.Resolve(team)
	r.Tags["Owner"] = "mutated"
	r.Options["mount"] = "mutated"
	r.Options["c"] = "mutated"
	if c.KeyManagement.Tags["Owner"] != "platform" || c.Keyrelay.Providers["hashicorp_vault"]["mount"] != "secret" || team.Options["c"] != "d" {
		t.Error("Resolve returned maps shared with the config or the team")
	}
	if r := Default().Resolve(nil); r.Tags == nil || r.Options == nil {
		t.Error("Resolve returned nil maps")
	}
}

func TestResolveHandBuiltConfig(t *testing.T) {
	r := (&Config{}).Resolve(nil)
	if r.Backend != DefaultKeyManagementSystem || r.AccessMode != DefaultAccessMode || r.NameTemplate != DefaultNameTemplate {
		t.Errorf("zero Config resolved to %+v; want defaults for backend, access mode and template", r)
	}
}

func TestCanWriteCanRead(t *testing.T) {
	tests := map[string]struct {
		mode              string
		canWrite, canRead bool
	}{
		"read_only":      {events.AccessReadOnly, false, true},
		"write_only":     {events.AccessWriteOnly, true, false},
		"read_and_write": {events.AccessReadAndWrite, true, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := Resolved{AccessMode: tc.mode}
			if r.CanWrite() != tc.canWrite || r.CanRead() != tc.canRead {
				t.Errorf("CanWrite, CanRead = %v, %v; want %v, %v", r.CanWrite(), r.CanRead(), tc.canWrite, tc.canRead)
			}
		})
	}
	if !Default().Resolve(nil).CanWrite() {
		t.Error("the default configuration cannot write")
	}
}

func TestSecretName(t *testing.T) {
	tests := map[string]struct {
		template, prefix     string
		teamID, keyID, alias string
		want                 string // "" means an error is expected
		wantErr              string
	}{
		"default template": {
			template: DefaultNameTemplate, prefix: "litellm/",
			teamID: "team-a", keyID: "k1", alias: "prod-key", want: "litellm/team-a/k1",
		},
		"default template ignores alias changes": {
			template: DefaultNameTemplate, prefix: "litellm/",
			teamID: "team-a", keyID: "k1", alias: "renamed", want: "litellm/team-a/k1",
		},
		"alias template": {
			template: LiteLLMNameTemplate, prefix: "litellm/",
			teamID: "team-a", keyID: "k1", alias: "prod-key", want: "litellm/prod-key",
		},
		"alias-less key falls back to key id": {
			template: LiteLLMNameTemplate, prefix: "litellm/",
			teamID: "team-a", keyID: "k1", alias: "", want: "litellm/k1",
		},
		"alias with team": {
			template: "{prefix}{team_id}/{alias}", prefix: "gw/",
			teamID: "t", keyID: "k1", alias: "svc/prod", want: "gw/t/svc/prod",
		},
		"no prefix": {
			template: DefaultNameTemplate, prefix: "",
			teamID: "t", keyID: "k", want: "t/k",
		},
		"team not needed when unused": {
			template: "{prefix}{key_id}", prefix: "p/",
			teamID: "", keyID: "k", want: "p/k",
		},
		"placeholder-looking alias is not expanded": {
			template: LiteLLMNameTemplate, prefix: "p/",
			teamID: "t", keyID: "k", alias: "{key_id}", want: "p/{key_id}",
		},
		"alias path traversal":  {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "../../etc/passwd", wantErr: `contains ".."`},
		"alias dotdot inside":   {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a..b", wantErr: `contains ".."`},
		"alias absolute":        {template: "{alias}", keyID: "k", alias: "/etc/passwd", wantErr: `starts with "/"`},
		"alias empty segment":   {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a//b", wantErr: "empty path segment"},
		"alias trailing slash":  {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a/", wantErr: "empty path segment"},
		"alias dot segment":     {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "./a", wantErr: `"." path segment`},
		"alias newline":         {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a\nb", wantErr: "control character"},
		"alias escape sequence": {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a\x1b[2Jb", wantErr: "control character"},
		"alias C1 control":      {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a\u0085b", wantErr: "control character"},
		"alias NUL":             {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a\x00b", wantErr: "control character"},
		"alias backslash":       {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: `..\..\x`, wantErr: `".."`},
		"alias lone backslash":  {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: `a\b`, wantErr: "backslash"},
		"alias invalid UTF-8":   {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: "a\xffb", wantErr: "not valid UTF-8"},
		"alias too long":        {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "k", alias: strings.Repeat("a", MaxSecretNameLen), wantErr: "longer than"},
		"team traversal":        {template: DefaultNameTemplate, prefix: "litellm/", teamID: "..", keyID: "k", wantErr: "team id"},
		"team with slash":       {template: DefaultNameTemplate, prefix: "litellm/", teamID: "a/b", keyID: "k", wantErr: "team id"},
		"team empty when used":  {template: DefaultNameTemplate, prefix: "litellm/", teamID: "", keyID: "k", wantErr: "team id is required"},
		"key id empty":          {template: LiteLLMNameTemplate, prefix: "litellm/", keyID: "", alias: "a", wantErr: "key id is required"},
		"key id traversal":      {template: DefaultNameTemplate, prefix: "litellm/", teamID: "t", keyID: "../k", wantErr: "key id"},
		"hostile prefix":        {template: DefaultNameTemplate, prefix: "../", teamID: "t", keyID: "k", wantErr: `contains ".."`},
		"absolute prefix":       {template: DefaultNameTemplate, prefix: "/", teamID: "t", keyID: "k", wantErr: `starts with "/"`},
		"team template unknown": {template: "{prefix}{user_id}/{key_id}", prefix: "p/", teamID: "t", keyID: "k", wantErr: "unknown placeholder"},
		"team template no key":  {template: "{prefix}{team_id}", prefix: "p/", teamID: "t", keyID: "k", wantErr: "must contain {key_id} or {alias}"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := Resolved{NameTemplate: tc.template, Prefix: tc.prefix}
			got, err := r.SecretName(tc.teamID, tc.keyID, tc.alias)
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Errorf("SecretName = %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("SecretName = %q, want an error containing %q", got, tc.wantErr)
			}
			if got != "" {
				t.Errorf("SecretName returned %q with an error", got)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error = %q, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalidName) {
				t.Errorf("error %v does not match ErrInvalidName", err)
			}
		})
	}
}

func TestSecretNameFromResolve(t *testing.T) {
	c := Default()
	name, err := c.Resolve(&events.TeamSettings{NameTemplate: LiteLLMNameTemplate}).SecretName("team-a", "k1", "")
	if err != nil || name != "litellm/k1" {
		t.Errorf("SecretName = %q, %v; want litellm/k1", name, err)
	}
}

func FuzzSecretName(f *testing.F) {
	f.Add("{prefix}{team_id}/{key_id}", "litellm/", "team", "key", "alias")
	f.Add("{prefix}{alias}", "", "t", "k", "../x")
	f.Fuzz(func(t *testing.T, template, prefix, team, key, alias string) {
		name, err := Resolved{NameTemplate: template, Prefix: prefix}.SecretName(team, key, alias)
		if err != nil {
			return
		}
		if strings.Contains(name, "..") || strings.HasPrefix(name, "/") || strings.Contains(name, "//") ||
			strings.HasSuffix(name, "/") || strings.ContainsAny(name, "\x00\n\r\t\\") || name == "" {
			t.Errorf("SecretName(%q, %q, %q, %q, %q) = %q", template, prefix, team, key, alias, name)
		}
	})
}

func TestProviderOptions(t *testing.T) {
	c := Default()
	c.KeyManagementSystem = "hashicorp_vault"
	c.Keyrelay.Providers = map[string]map[string]string{"hashicorp_vault": {"addr": "https://vault.internal", "mount": "secret"}}
	team := &events.TeamSettings{Options: map[string]string{"addr": "https://attacker.example", "mount": "team-kv", "namespace": "team-a"}}
	r := c.Resolve(team)
	for name, tc := range map[string]struct {
		allowed     func(string) bool
		want        map[string]string
		wantRefused []string
	}{
		"mount and namespace allowed": {
			allowed:     func(k string) bool { return k == "mount" || k == "namespace" },
			want:        map[string]string{"addr": "https://vault.internal", "mount": "team-kv", "namespace": "team-a"},
			wantRefused: []string{"addr"},
		},
		"nothing allowed": {
			allowed:     func(string) bool { return false },
			want:        map[string]string{"addr": "https://vault.internal", "mount": "secret"},
			wantRefused: []string{"addr", "mount", "namespace"},
		},
		"nil filter refuses all": {
			want:        map[string]string{"addr": "https://vault.internal", "mount": "secret"},
			wantRefused: []string{"addr", "mount", "namespace"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, refused := r.ProviderOptions(tc.allowed)
			if !reflect.DeepEqual(got, tc.want) || !reflect.DeepEqual(refused, tc.wantRefused) {
				t.Fatalf("got %v refused %v; want %v refused %v", got, refused, tc.want, tc.wantRefused)
			}
		})
	}
}
