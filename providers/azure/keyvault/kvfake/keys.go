package kvfake

// The Key Vault keys API, as far as key wrapping needs it: create (a new
// version each time), get, wrapkey and unwrapkey with RSA-OAEP-256 done
// with real RSA keys, and Key Vault's errors: 404 KeyNotFound for an
// unknown key or version, 400 BadParameter for an unsupported algorithm,
// a malformed value or a ciphertext that does not decrypt, 403 Forbidden
// for an operation the key's key_ops do not permit. Authentication,
// api-version, injected faults (429 with Retry-After, 5xx) and quotas are
// those of the rest of the fake (serve).

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"slices"
	"strings"
)

// DefaultKeySize is the RSA modulus size of keys created without key_size.
const DefaultKeySize = 2048

type kvKey struct {
	name     string
	versions []*keyVersion // oldest first; the last is current
}

type keyVersion struct {
	id      string
	priv    *rsa.PrivateKey
	ops     []string
	enabled bool
	created int64
}

// KeyVersions returns the versions of key name, oldest first (for tests).
func (s *Server) KeyVersions(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[strings.ToLower(name)]
	if k == nil {
		return nil
	}
	out := make([]string, len(k.versions))
	for i, v := range k.versions {
		out[i] = v.id
	}
	return out
}

// b64url decodes Key Vault's base64url byte fields (padding tolerated).
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func keyNotFound(w http.ResponseWriter, name string) {
	writeErr(w, http.StatusNotFound, "KeyNotFound", "A key with (name/id) "+name+" was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")
}

func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request, base string, parts []string) {
	if s.keys == nil {
		s.keys = map[string]*kvKey{}
	}
	name := parts[1]
	if !nameRE.MatchString(name) {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid name: "+name)
		return
	}
	rest := parts[2:]
	switch {
	case len(rest) == 1 && rest[0] == "create" && r.Method == http.MethodPost:
		s.createKey(w, r, base, name)
	case len(rest) <= 1 && r.Method == http.MethodGet:
		ver := ""
		if len(rest) == 1 {
			ver = rest[0]
		}
		k, v := s.keyVersion(name, ver)
		if v == nil {
			keyNotFound(w, name)
			return
		}
		writeJSON(w, http.StatusOK, s.keyBundle(base, k, v))
	case (len(rest) == 2 || len(rest) == 1) && r.Method == http.MethodPost && (rest[len(rest)-1] == "wrapkey" || rest[len(rest)-1] == "unwrapkey"):
		ver := ""
		if len(rest) == 2 {
			ver = rest[0]
		}
		s.keyOp(w, r, base, name, ver, rest[len(rest)-1])
	default:
		writeErr(w, http.StatusMethodNotAllowed, "BadParameter", "method not allowed")
	}
}

// keyVersion finds a version ("" for the current one).
func (s *Server) keyVersion(name, ver string) (*kvKey, *keyVersion) {
	k := s.keys[strings.ToLower(name)]
	if k == nil || len(k.versions) == 0 {
		return nil, nil
	}
	if ver == "" {
		return k, k.versions[len(k.versions)-1]
	}
	for _, v := range k.versions {
		if v.id == ver {
			return k, v
		}
	}
	return k, nil
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, base, name string) {
	var body struct {
		Kty     string   `json:"kty"`
		KeySize *int     `json:"key_size"`
		KeyOps  []string `json:"key_ops"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON.")
		return
	}
	if body.Kty != "RSA" && body.Kty != "RSA-HSM" {
		writeErr(w, http.StatusBadRequest, "BadParameter", "Property kty has invalid value: this fake supports RSA and RSA-HSM keys only.")
		return
	}
	size := DefaultKeySize
	if body.KeySize != nil {
		size = *body.KeySize
	}
	if size != 2048 && size != 3072 && size != 4096 {
		writeErr(w, http.StatusBadRequest, "BadParameter", "Property key_size has invalid value.")
		return
	}
	priv, err := rsa.GenerateKey(rand.Reader, size)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "InternalServerError", "key generation failed")
		return
	}
	ops := body.KeyOps
	if len(ops) == 0 {
		ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
	}
	k := s.keys[strings.ToLower(name)]
	if k == nil {
		k = &kvKey{name: name}
		s.keys[strings.ToLower(name)] = k
	}
	v := &keyVersion{id: newVersionID(), priv: priv, ops: ops, enabled: true, created: s.now().Unix()}
	k.versions = append(k.versions, v)
	writeJSON(w, http.StatusOK, s.keyBundle(base, k, v))
}

func (s *Server) keyBundle(base string, k *kvKey, v *keyVersion) map[string]any {
	pub := v.priv.PublicKey
	return map[string]any{
		"key": map[string]any{
			"kid":     base + "/keys/" + k.name + "/" + v.id,
			"kty":     "RSA",
			"key_ops": v.ops,
			"n":       enc(pub.N.Bytes()),
			"e":       enc(big.NewInt(int64(pub.E)).Bytes()),
		},
		"attributes": map[string]any{"enabled": v.enabled, "created": v.created, "updated": v.created,
			"recoveryLevel": s.recoveryLevel(), "exportable": false},
	}
}

func (s *Server) keyOp(w http.ResponseWriter, r *http.Request, base, name, ver, op string) {
	var body struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON.")
		return
	}
	k, v := s.keyVersion(name, ver)
	if v == nil {
		keyNotFound(w, name)
		return
	}
	opName := map[string]string{"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}[op]
	if !slices.Contains(v.ops, opName) {
		writeInnerErr(w, http.StatusForbidden, "Forbidden", "KeyOperationForbidden", "Operation "+opName+" is not permitted on this key.")
		return
	}
	if !v.enabled {
		writeInnerErr(w, http.StatusForbidden, "Forbidden", "KeyDisabled", "Operation "+opName+" is not allowed on a disabled key.")
		return
	}
	if body.Alg != "RSA-OAEP-256" && body.Alg != "RSA-OAEP" {
		writeErr(w, http.StatusBadRequest, "BadParameter", "Invalid algorithm: this fake supports RSA-OAEP-256 and RSA-OAEP.")
		return
	}
	in, err := b64url(body.Value)
	if err != nil || len(in) == 0 {
		writeErr(w, http.StatusBadRequest, "BadParameter", "Property value has invalid value.")
		return
	}
	h := sha256.New()
	if body.Alg == "RSA-OAEP" {
		h = newSHA1()
	}
	var out []byte
	if op == "wrapkey" {
		out, err = rsa.EncryptOAEP(h, rand.Reader, &v.priv.PublicKey, in, nil)
	} else {
		out, err = rsa.DecryptOAEP(h, nil, v.priv, in, nil)
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, "BadParameter", "Operation "+opName+" failed: the value is not valid for this key and algorithm.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"kid": base + "/keys/" + k.name + "/" + v.id, "value": enc(out)})
}
