package providers

// AsLister returns p as a Lister, looking through wrappers: when p is not a
// Lister but has an Unwrap() Provider method (as middleware such as the
// worker's instrumentation does), the wrapped provider is tried, and so on.
// A List call on the result bypasses the wrappers between p and the Lister
// found (their metrics, rate limits, fault injection).
func AsLister(p Provider) (Lister, bool) {
	for i := 0; p != nil && i < maxUnwrap; i++ {
		if l, ok := p.(Lister); ok {
			return l, true
		}
		if w, ok := p.(ListerWrapper); ok {
			// A wrapper that observes listing (metrics) hands out its own.
			return w.AsLister()
		}
		u, ok := p.(interface{ Unwrap() Provider })
		if !ok {
			return nil, false
		}
		p = u.Unwrap()
	}
	return nil, false
}

// maxUnwrap bounds AsLister's walk through wrappers (a wrapper returning
// itself must not hang it).
const maxUnwrap = 32

// ListOwned reports whether a secret with these tags is one List should
// return for req, given its provider-neutral name.
func ListOwned(req ListRequest, name string, tags map[string]string) bool {
	if !req.Every && !IsOwnedBy(tags, Owner{TeamID: req.TeamID}) {
		return false
	}
	return len(name) >= len(req.Prefix) && name[:len(req.Prefix)] == req.Prefix
}

// ListedFromTags builds the Listed entry for name from its ownership tags.
func ListedFromTags(name string, tags map[string]string) Listed {
	return Listed{Name: name, Owner: Owner{TeamID: tags[TeamTag], KeyID: tags[KeyTag]}}
}

// ListerWrapper is implemented by provider wrappers (metrics) that cannot
// know statically whether what they wrap can list: AsLister asks them.
type ListerWrapper interface {
	AsLister() (Lister, bool)
}
