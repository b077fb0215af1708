package lookup

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/keyrelay/keyrelay/settings"
)

// Auth maps bearer tokens to scopes. Tokens are kept only as SHA-256
// digests; a presented token is hashed and its digest compared in constant
// time with every configured one, so neither the comparison nor the map
// shape tells how close a guess was. Tokens are never logged.
type Auth struct {
	creds []credential
}

type credential struct {
	name   string
	digest [sha256.Size]byte
	scope  Scope
}

// NewAuth builds an Auth from keyrelay.lookup.clients.
func NewAuth(clients map[string]settings.LookupClient) (*Auth, error) {
	a := &Auth{}
	for name, c := range clients {
		cr := credential{name: name, scope: Scope{Team: c.Team, Global: c.Global}}
		switch {
		case c.Token != "":
			cr.digest = sha256.Sum256([]byte(c.Token))
		case c.TokenSHA256 != "":
			b, err := hex.DecodeString(c.TokenSHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("lookup client %s: token_sha256 is not 64 hex digits", name)
			}
			copy(cr.digest[:], b)
		default:
			return nil, fmt.Errorf("lookup client %s: no token", name)
		}
		for _, o := range a.creds {
			if o.digest == cr.digest {
				return nil, fmt.Errorf("lookup clients %s and %s share a token", o.name, name)
			}
		}
		a.creds = append(a.creds, cr)
	}
	return a, nil
}

// Len is the number of configured credentials.
func (a *Auth) Len() int {
	if a == nil {
		return 0
	}
	return len(a.creds)
}

// NoClientsReason is the reason of the 401 every token-checked lookup gets
// while keyrelay.lookup.clients is empty.
const NoClientsReason = "no lookup clients are configured (keyrelay.lookup.clients is empty): every lookup is refused"

// Authenticate returns the scope and client name of token. With no
// credentials configured every token, and the lack of one, is refused.
func (a *Auth) Authenticate(token string) (Scope, string, *Error) {
	if a == nil || len(a.creds) == 0 {
		return Scope{}, "", unauthorized(NoClientsReason)
	}
	if token == "" {
		return Scope{}, "", unauthorized("no credentials: send Authorization: Bearer <token>")
	}
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range a.creds {
		if subtle.ConstantTimeCompare(d[:], a.creds[i].digest[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Scope{}, "", unauthorized("the token is not valid")
	}
	return a.creds[found].scope, a.creds[found].name, nil
}

// BearerToken extracts the token of an "Authorization: Bearer" value.
func BearerToken(header string) string {
	const p = "bearer "
	if len(header) > len(p) && strings.EqualFold(header[:len(p)], p) {
		return strings.TrimSpace(header[len(p):])
	}
	return ""
}

// authorize checks that a credential of scope cred may read the scope a
// request asks for (team "" means the credential's own).
func authorize(cred Scope, team string) (Scope, *Error) {
	if team == "" || (!cred.Global && team == cred.Team) {
		return cred, nil
	}
	if cred.Global {
		return Scope{}, forbidden("global credentials read the global scope only; a team's secrets need that team's credentials")
	}
	return Scope{}, forbidden("these credentials read only their own team's secrets")
}
