package keyvault_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
)

var kvNameRE = regexp.MustCompile(`^[0-9a-z-]{1,127}$`)

func TestKVName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"sk-team-1", "sk-team-1"},
		{"litellm-key", "litellm-key"},
		{"a", "a"},
		{strings.Repeat("a", 127), strings.Repeat("a", 127)},
	} {
		if got := keyvault.KVName(tc.in); got != tc.want {
			t.Errorf("KVName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	hostile := []string{
		"", "/", "//", "-", "--", "a--b", "a/b", "a-b", "a_b", "a.b", "ab", "A/B", "A-b", "A-B", "a-B",
		"a//b", "a/b/", "/a/b", "../../etc/passwd", "team/../other", "a%2Fb", "a?b=c#d",
		"ключ", "鍵", "clé", "cle\u0301", "🔑", "a\x00b", "a\nb", "a b", "a\tb", "\xff\xfe",
		"sk-1", "SK-1", "Sk-1", "sk_1", "sk.1", "sk 1",
		strings.Repeat("a", 127) + "b", strings.Repeat("a", 128), strings.Repeat("a", 500),
		strings.Repeat("a", 499) + "1", strings.Repeat("a", 499) + "2", strings.Repeat("/", 500),
		strings.Repeat("é", 250), strings.Repeat("a-", 200),
	}
	seen := map[string]string{}
	for _, in := range hostile {
		got := keyvault.KVName(in)
		if !kvNameRE.MatchString(got) {
			t.Errorf("KVName(%q) = %q breaks Key Vault's rules", in, got)
		}
		if got != keyvault.KVName(in) {
			t.Errorf("KVName(%q) not deterministic", in)
		}
		// Key Vault names are case-insensitive: compare lower-cased.
		k := strings.ToLower(got)
		if prev, dup := seen[k]; dup {
			t.Errorf("KVName(%q) and KVName(%q) collide on %q", prev, in, got)
		}
		seen[k] = in
	}
	// An adversarial name equal to another name's mapping cannot be used as
	// is: it contains "--", so it is mapped too.
	m := keyvault.KVName("a/b")
	if keyvault.KVName(m) == m {
		t.Errorf("the mapped name %q maps to itself", m)
	}
}

// TestNamesOnTheFake writes names that differ only in characters Key Vault
// rejects or in case, and reads each back.
func TestNamesOnTheFake(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	names := []string{"a/b", "a-b", "a_b", "a.b", "A-b", "A/B", "ключ/1", "ключ/2", strings.Repeat("x/", 250)}
	for i, n := range names {
		put(t, p, n, "value-"+n, "e")
		_ = i
	}
	for _, n := range names {
		s, err := p.Get(context.Background(), n, "")
		if err != nil {
			t.Fatalf("Get %q: %v", n, err)
		}
		if string(s.Value) != "value-"+n || s.Name != n {
			t.Errorf("Get %q returned %q named %q", n, s.Value, s.Name)
		}
	}
	if got := len(f.srv.Names()); got != len(names) {
		t.Errorf("%d secrets in the vault, want %d", got, len(names))
	}
	_, err := p.Get(context.Background(), "a", "../b")
	wantKind(t, err, providers.ErrInvalid, providers.Permanent)
}

func FuzzKVName(f *testing.F) {
	for _, s := range []string{"", "a/b", "a--b", "A", "ключ", strings.Repeat("z", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		got := keyvault.KVName(a)
		if !kvNameRE.MatchString(got) {
			t.Fatalf("KVName(%q) = %q breaks Key Vault's rules", a, got)
		}
		// Kept as is exactly when it is already a canonical name; a mapped
		// name is never kept as is.
		if got == a && (strings.Contains(a, "--") || strings.ToLower(a) != a) {
			t.Fatalf("KVName(%q) kept a non-canonical name", a)
		}
		if got != a && !strings.Contains(got, "--") {
			t.Fatalf("KVName(%q) = %q has no hash marker", a, got)
		}
	})
}
