package vault

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLength is the longest secret name accepted, in bytes (prefix
// included), as settings.MaxSecretNameLen.
const MaxNameLength = 1024

// checkPath validates a slash-separated Vault path: a secret name, a
// mount, a namespace or a path prefix. Vault's client cleans request paths
// (path.Join), so "." and ".." segments and empty segments would silently
// address another secret; they are refused, as are ".." anywhere, control
// characters and invalid UTF-8.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > MaxNameLength:
		return fmt.Errorf("path is %d bytes, at most %d allowed", len(p), MaxNameLength)
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return errors.New("path contains a control character")
	case strings.Contains(p, ".."):
		return errors.New(`path contains ".."`)
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//"):
		return errors.New("path has an empty segment (leading, trailing or double '/')")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." {
			return errors.New(`path has a "." segment`)
		}
	}
	return nil
}

// paths builds the API paths (relative to /v1/) of one secret.
type paths struct {
	base string // "[namespace/]mount/"
	rel  string // "[prefix/]name"
}

func (c Config) pathsFor(name string) paths {
	base := c.Mount + "/"
	if c.Namespace != "" {
		base = c.Namespace + "/" + base
	}
	rel := name
	if c.PathPrefix != "" {
		rel = c.PathPrefix + "/" + name
	}
	return paths{base: base, rel: rel}
}

func (p paths) data() string     { return p.base + "data/" + p.rel }
func (p paths) metadata() string { return p.base + "metadata/" + p.rel }
func (p paths) undelete() string { return p.base + "undelete/" + p.rel }
func (p paths) destroy() string  { return p.base + "destroy/" + p.rel }
