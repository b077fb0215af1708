package lookup

import (
	"errors"
	"strings"

	"github.com/keyrelay/keyrelay/events"
)

// MaxNameLen bounds a requested name.
const MaxNameLen = 512

// envPrefix is LiteLLM's reference to an environment variable; the
// global scope accepts it and reads the name after it.
const envPrefix = "os.environ/"

// Scope is what a credential may read: one team, or the global scope.
type Scope struct {
	Team   string
	Global bool
}

func (s Scope) String() string {
	if s.Global {
		return "global"
	}
	return "team " + s.Team
}

// cacheKey is the cache key of name in s: scopes never share entries.
func (s Scope) cacheKey(name string) string {
	if s.Global {
		return "g\x00" + name
	}
	return "t\x00" + s.Team + "\x00" + name
}

// CheckName validates a requested name for scope s and returns it in the
// form it is looked up under. Team names are key ids; global names are
// secret names: letters, digits and /_+=.@:- in non-empty segments, none
// of them "." or "..".
func CheckName(s Scope, name string) (string, *Error) {
	if name == "" {
		return "", badRequest("name is empty")
	}
	if len(name) > MaxNameLen {
		return "", badRequest("name is %d bytes, longer than %d", len(name), MaxNameLen)
	}
	if !s.Global {
		if err := events.ValidateID("name", name); err != nil {
			var ve *events.ValidationError
			if errors.As(err, &ve) {
				return "", badRequest("name %s (a team's names are its key ids)", ve.Reason)
			}
			return "", badRequest("%v", err)
		}
		return name, nil
	}
	name = strings.TrimPrefix(name, envPrefix)
	if name == "" {
		return "", badRequest("name is empty after %q", envPrefix)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", badRequest("name contains control character 0x%02x at byte %d", c, i)
		case c >= 0x80:
			return "", badRequest("name contains a non-ASCII byte at %d", i)
		case isNameByte(c):
		default:
			return "", badRequest("name contains %q at byte %d; allowed are letters, digits and /_+=.@:-", c, i)
		}
	}
	for i, seg := range strings.Split(name, "/") {
		switch seg {
		case "":
			return "", badRequest("name has an empty path segment (segment %d)", i)
		case ".", "..":
			return "", badRequest("name has a %q path segment", seg)
		}
	}
	return name, nil
}

func isNameByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strings.IndexByte("/_+=.@:-", c) >= 0
}
