package settings

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/events"
)

// Resolved is the effective secret-manager configuration for one team: the
// global settings with the team's overrides applied.
type Resolved struct {
	// Backend is the key_management_system name to use.
	Backend string
	// StoreVirtualKeys false means key events are confirmed as skipped.
	StoreVirtualKeys bool
	// Prefix is the {prefix} of NameTemplate.
	Prefix string
	// AccessMode is read_only, write_only or read_and_write.
	AccessMode string
	// NameTemplate builds secret names; see SecretName.
	NameTemplate string
	// Description and Tags are written with every secret.
	Description string
	Tags        map[string]string
	// Options are the provider options for Backend. They may hold
	// credentials taken from the configuration file: never log them.
	Options map[string]string
	// GlobalOptions and TeamOptions are the two layers Options merges: the
	// configuration's (LiteLLM's aws_* settings, keyrelay.providers) and
	// the team's. ProviderOptions merges them with a filter on the team's.
	GlobalOptions map[string]string
	TeamOptions   map[string]string
	// RetirePreviousAfter is when a previous version is retired after a
	// rotation without a grace period, unless KeepPrevious (see
	// RotationConfig).
	RetirePreviousAfter time.Duration
	KeepPrevious        bool
}

// ProviderOptions returns GlobalOptions overridden by the team options that
// allowed accepts, and the sorted names of the team options it refused.
func (r Resolved) ProviderOptions(allowed func(key string) bool) (map[string]string, []string) {
	out := make(map[string]string, len(r.GlobalOptions)+len(r.TeamOptions))
	merge(out, r.GlobalOptions)
	var refused []string
	for k, v := range r.TeamOptions {
		if allowed != nil && allowed(k) {
			out[k] = v
		} else {
			refused = append(refused, k)
		}
	}
	sort.Strings(refused)
	return out, refused
}

// Resolve returns the settings that apply to team's keys. A nil team means
// the global settings.
//
// Scalars: a team value, when set, replaces the global one (Backend,
// AccessMode, NameTemplate and Description when non-empty;
// StoreVirtualKeys and Prefix when non-nil, so a team can turn storing off
// or use an empty prefix).
//
// Maps, merged key by key with the later layer winning:
//
//	Tags:    key_management_settings.tags < team.Tags
//	Options: key_management_settings.aws_* (only when Backend is
//	         aws_secret_manager) < keyrelay.providers[Backend] < team.Options
//
// The returned maps are fresh copies, never nil, and never shared with c.
// Team values are used as given; a team's NameTemplate is checked by
// SecretName (and can be checked on arrival with ValidateTemplate).
func (c *Config) Resolve(team *events.TeamSettings) Resolved {
	km := c.KeyManagement
	r := Resolved{
		Backend:          c.KeyManagementSystem,
		StoreVirtualKeys: km.StoreVirtualKeys,
		Prefix:           km.PrefixForStoredVirtualKeys,
		AccessMode:       km.AccessMode,
		NameTemplate:     c.Keyrelay.Naming.Template,
		Description:      km.Description,
		Tags:             map[string]string{},
		Options:          map[string]string{},
	}
	if team != nil {
		if team.Backend != "" {
			r.Backend = team.Backend
		}
		if team.StoreVirtualKeys != nil {
			r.StoreVirtualKeys = *team.StoreVirtualKeys
		}
		if team.Prefix != nil {
			r.Prefix = *team.Prefix
		}
		if team.AccessMode != "" {
			r.AccessMode = team.AccessMode
		}
		if team.NameTemplate != "" {
			r.NameTemplate = team.NameTemplate
		}
		if team.Description != "" {
			r.Description = team.Description
		}
	}
	if r.Backend == "" {
		r.Backend = DefaultKeyManagementSystem
	}
	if r.AccessMode == "" {
		r.AccessMode = DefaultAccessMode
	}
	if r.NameTemplate == "" {
		r.NameTemplate = DefaultNameTemplate
	}

	retire := c.Keyrelay.Rotation.RetirePreviousAfter
	if team != nil && team.RetirePreviousAfter != "" {
		retire = team.RetirePreviousAfter
	}
	if retire == "" {
		retire = events.RetireKeep
	}
	var err error
	if r.RetirePreviousAfter, r.KeepPrevious, err = events.ParseRetireAfter(retire); err != nil {
		r.KeepPrevious = true // validated before; never retire on a bad value
	}

	merge(r.Tags, km.Tags)
	if r.Backend == "aws_secret_manager" {
		merge(r.Options, km.awsOptions())
	}
	merge(r.Options, c.Keyrelay.Providers[r.Backend])
	r.GlobalOptions = map[string]string{}
	merge(r.GlobalOptions, r.Options)
	r.TeamOptions = map[string]string{}
	if team != nil {
		merge(r.Tags, team.Tags)
		merge(r.Options, team.Options)
		merge(r.TeamOptions, team.Options)
	}
	return r
}

func merge(dst, src map[string]string) {
	for k, v := range src {
		dst[k] = v
	}
}

// awsOptions returns LiteLLM's AWS settings under LiteLLM's names.
func (km KeyManagementSettings) awsOptions() map[string]string {
	out := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set("aws_region_name", km.AWSRegionName)
	set("aws_role_name", km.AWSRoleName)
	set("aws_session_name", km.AWSSessionName)
	set("aws_external_id", km.AWSExternalID)
	set("aws_profile_name", km.AWSProfileName)
	set("aws_web_identity_token", km.AWSWebIdentityToken)
	set("aws_sts_endpoint", km.AWSSTSEndpoint)
	set("replica_regions", strings.Join(km.ReplicaRegions, ","))
	return out
}

// CanWrite reports whether AccessMode allows writing secrets (stores,
// rotations, deletes). It is false for read_only. It does not look at
// StoreVirtualKeys: a write refused by access mode is rejected, a write
// switched off by store_virtual_keys is skipped.
func (r Resolved) CanWrite() bool { return r.AccessMode != events.AccessReadOnly }

// CanRead reports whether AccessMode allows lookups (false for write_only).
func (r Resolved) CanRead() bool { return r.AccessMode != events.AccessWriteOnly }

// ErrInvalidName matches, with errors.Is, every error SecretName and
// ValidateTemplate return. Such errors are permanent: retrying cannot help.
var ErrInvalidName = errors.New("invalid secret name")

type nameError struct{ msg string }

func (e *nameError) Error() string        { return e.msg }
func (e *nameError) Is(target error) bool { return target == ErrInvalidName }

func nameErrorf(format string, args ...any) error {
	return &nameError{msg: fmt.Sprintf(format, args...)}
}

// MaxSecretNameLen bounds a rendered secret name. Providers map names to
// their own, often shorter, limits.
const MaxSecretNameLen = 1024

// Template placeholders.
const (
	PlaceholderPrefix = "{prefix}"
	PlaceholderTeamID = "{team_id}"
	PlaceholderKeyID  = "{key_id}"
	PlaceholderAlias  = "{alias}"
)

// SecretName renders r.NameTemplate for one key.
//
// {prefix} is r.Prefix, followed by "/" when it does not end with one and
// another placeholder follows it, as LiteLLM joins the prefix and the name
// (see joinsName), {team_id} and {key_id} are the ids, {alias} is the
// key's alias or, when the key has none, its key id: LiteLLM cannot store or
// delete alias-less keys under alias naming, keyrelay names them by id.
// (With alias naming an alias equal to another key's id names the same
// secret; the providers' ownership tags refuse that overwrite.)
//
// keyID must be a valid id (events.ValidateID), and so must teamID when the
// template uses it. The rendered name must be valid UTF-8, at most
// MaxSecretNameLen bytes, and contain no control characters, no
// backslashes, no "..", no leading "/", no empty path segment ("a//b",
// trailing "/") and no "." segment; otherwise the error matches
// ErrInvalidName.
func (r Resolved) SecretName(teamID, keyID, alias string) (string, error) {
	if err := ValidateTemplate(r.NameTemplate); err != nil {
		return "", err
	}
	if err := checkID("key id", keyID); err != nil {
		return "", err
	}
	if strings.Contains(r.NameTemplate, PlaceholderTeamID) {
		if err := checkID("team id", teamID); err != nil {
			return "", err
		}
	}
	if alias == "" {
		alias = keyID
	}
	name := renderTemplate(r.NameTemplate, r.Prefix, teamID, keyID, alias)
	if err := checkSecretName(name); err != nil {
		return "", err
	}
	return name, nil
}

func checkID(what, id string) error {
	err := events.ValidateID(what, id)
	if err == nil {
		return nil // before errors.As, whose target would be allocated per call
	}
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return nameErrorf("%s %s", what, ve.Reason)
	}
	if err != nil {
		return nameErrorf("%s: %v", what, err)
	}
	return nil
}

// ValidateTemplate checks a naming template: only the placeholders
// {prefix}, {team_id}, {key_id} and {alias}, balanced braces, and at least
// one of {key_id} or {alias} (otherwise every key would share one name).
// Errors match ErrInvalidName.
func ValidateTemplate(template string) error {
	if template == "" {
		return nameErrorf("template is empty")
	}
	if len(template) > 256 {
		return nameErrorf("template is longer than 256 bytes")
	}
	identifying := false
	for rest := template; rest != ""; {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			break
		}
		if rest[open] == '}' {
			return nameErrorf("template %q has a '}' without '{'", clip(template))
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nameErrorf("template %q has a '{' without '}'", clip(template))
		}
		ph := rest[open : open+end+1]
		switch ph {
		case PlaceholderKeyID, PlaceholderAlias:
			identifying = true
		case PlaceholderPrefix, PlaceholderTeamID:
		default:
			return nameErrorf("template %q: unknown placeholder %q; use {prefix}, {team_id}, {key_id}, {alias}", clip(template), clip(ph))
		}
		rest = rest[open+end+1:]
	}
	if !identifying {
		return nameErrorf("template %q must contain {key_id} or {alias}", clip(template))
	}
	return nil
}

// joinsName reports whether a "/" goes between prefix and what follows
// {prefix} in a template (after): LiteLLM names a key
// prefix_for_stored_virtual_keys + "/" + name when the prefix does not end
// with "/" (KeyManagementEventHooks._get_secret_name), so "myorg" names
// alias a "myorg/a", as "myorg/" does. That holds where {prefix} is
// followed directly by another placeholder ({prefix}{alias},
// {prefix}{team_id}/{key_id}); fixed text after it ("{prefix}-{key_id}")
// is the template's own separator, and an empty prefix adds nothing.
func joinsName(prefix, after string) bool {
	return prefix != "" && !strings.HasSuffix(prefix, "/") && strings.HasPrefix(after, "{")
}

// renderTemplate substitutes placeholders in one pass, so a value that
// itself looks like a placeholder is never expanded. template must have
// passed ValidateTemplate.
func renderTemplate(template, prefix, teamID, keyID, alias string) string {
	var b strings.Builder
	b.Grow(len(template) + len(prefix) + len(teamID) + len(keyID) + len(alias))
	for rest := template; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:open])
		end := strings.IndexByte(rest[open:], '}')
		ph := rest[open : open+end+1]
		switch ph {
		case PlaceholderPrefix:
			b.WriteString(prefix)
			if joinsName(prefix, rest[open+end+1:]) {
				b.WriteByte('/')
			}
		case PlaceholderTeamID:
			b.WriteString(teamID)
		case PlaceholderKeyID:
			b.WriteString(keyID)
		case PlaceholderAlias:
			b.WriteString(alias)
		}
		rest = rest[open+end+1:]
	}
	return b.String()
}

func checkSecretName(name string) error {
	switch {
	case name == "":
		return nameErrorf("secret name is empty")
	case len(name) > MaxSecretNameLen:
		return nameErrorf("secret name is %d bytes, longer than %d", len(name), MaxSecretNameLen)
	case !utf8.ValidString(name):
		return nameErrorf("secret name is not valid UTF-8")
	case strings.Contains(name, ".."):
		return nameErrorf("secret name %q contains \"..\"", clip(name))
	case strings.HasPrefix(name, "/"):
		return nameErrorf("secret name %q starts with \"/\"", clip(name))
	}
	for _, r := range name {
		switch {
		case r < 0x20 || (r >= 0x7f && r <= 0x9f):
			return nameErrorf("secret name %q contains control character %U", clip(name), r)
		case r == '\\':
			return nameErrorf("secret name %q contains a backslash", clip(name))
		}
	}
	for _, seg := range strings.Split(name, "/") {
		switch seg {
		case "":
			return nameErrorf("secret name %q has an empty path segment", clip(name))
		case ".":
			return nameErrorf("secret name %q has a \".\" path segment", clip(name))
		}
	}
	return nil
}

// ResolveBackend is Resolve with the backend forced to backend: the settings
// to reach a secret written to a backend the team has since left (deletes
// and renames follow the secret, not the team's current choice).
func (c *Config) ResolveBackend(team *events.TeamSettings, backend string) Resolved {
	var t events.TeamSettings
	if team != nil {
		t = *team
	}
	t.Backend = backend
	return c.Resolve(&t)
}

// ResolvePlaced is ResolveBackend with the team's provider options
// replaced by teamOptions (nil or empty: none): the settings to reach a
// secret where it was written, with the team options it was written with
// (the ledger records them), not where the team's options point now. A
// team that moved its Vault namespace, mount or Google project still has
// its older secrets in the old one. Everything else (naming, tags, access
// mode) is the team's current setting, as with ResolveBackend.
func (c *Config) ResolvePlaced(team *events.TeamSettings, backend string, teamOptions map[string]string) Resolved {
	var t events.TeamSettings
	if team != nil {
		t = *team
	}
	t.Backend = backend
	t.Options = teamOptions
	return c.Resolve(&t)
}

// ValidateTeamNaming checks the naming a team's settings set, on their
// own: a prefix that could start a secret name, and a name template that
// ValidateTemplate accepts and whose fixed text renders valid names (with
// the team's prefix when it sets one). Settings that fail can never name a
// secret: every key event of the team would be rejected, so the settings
// event is the one to refuse. field prefixes the names in errors (e.g.
// "data.settings"); the error is a *FieldError.
func ValidateTeamNaming(field string, s *events.TeamSettings) error {
	if s == nil {
		return nil
	}
	prefix := "prefix/"
	if s.Prefix != nil {
		if err := checkPrefix(*s.Prefix); err != "" {
			return fieldErr(field+".prefix", 0, "%s", err)
		}
		prefix = *s.Prefix
	}
	if s.NameTemplate != "" {
		if err := ValidateTemplate(s.NameTemplate); err != nil {
			return fieldErr(field+".name_template", 0, "%s", err)
		}
		if err := checkTemplateLiteral(s.NameTemplate, prefix); err != "" {
			return fieldErr(field+".name_template", 0, "%s", err)
		}
	}
	return nil
}
