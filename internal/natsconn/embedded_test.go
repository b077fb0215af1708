package natsconn

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/settings"
)

// embeddedConfig is an embedded server's configuration on a free port with
// a store directory of its own.
func embeddedConfig(t *testing.T, token string) settings.NATSConfig {
	t.Helper()
	return settings.NATSConfig{Token: token, Embedded: settings.EmbeddedConfig{
		Host: "127.0.0.1", Port: testenv.FreePort(t), StoreDir: filepath.Join(t.TempDir(), "nats")}}
}

// startEmbedded starts the server, stopped at the end of the test.
func startEmbedded(t *testing.T, c settings.NATSConfig) *Embedded {
	t.Helper()
	e, err := StartEmbedded(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

// TestEmbeddedRequiresToken: a client without the server's token, or with
// another, gets an authorization error; one with it (as the process that
// started the server has it, or as a command reads it) connects. The token
// is keyrelay.nats.token when set, else a generated one in the store
// directory (43 characters, mode 0600), which is reused across restarts.
func TestEmbeddedRequiresToken(t *testing.T) {
	const configured = "configured-embedded-token-0123"
	tests := map[string]struct {
		token string
	}{
		"generated token":         {},
		"keyrelay.nats.token set": {token: configured},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := embeddedConfig(t, tc.token)
			e := startEmbedded(t, c)
			url := e.ClientURL()
			path := TokenFile(c.Embedded)

			want := tc.token
			if tc.token == "" {
				if e.TokenFile != path || !e.Generated {
					t.Fatalf("TokenFile %q generated %v, want %q generated", e.TokenFile, e.Generated, path)
				}
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Fatalf("token file mode %04o, want 0600", fi.Mode().Perm())
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				want = strings.TrimSpace(string(b))
				if len(want) != 43 {
					t.Fatalf("generated token has %d characters, want 43 (32 bytes, base64url)", len(want))
				}
			} else {
				if e.TokenFile != "" || e.Generated {
					t.Fatalf("TokenFile %q generated %v with keyrelay.nats.token set", e.TokenFile, e.Generated)
				}
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("a token file was written with keyrelay.nats.token set: %v", err)
				}
			}

			for what, opts := range map[string][]nats.Option{
				"no token":      nil,
				"another token": {nats.Token("not-the-token-0123456789abcdef0123456789")},
				"user/password": {nats.UserInfo("keyrelay", want)},
			} {
				if nc, err := nats.Connect(url, opts...); !errors.Is(err, nats.ErrAuthorization) {
					if nc != nil {
						nc.Close()
					}
					t.Errorf("%s: connect error %v, want %v", what, err, nats.ErrAuthorization)
				}
			}
			client, err := EmbeddedClientConfig(c)
			if err != nil {
				t.Fatal(err)
			}
			for what, cc := range map[string]settings.NATSConfig{"server's process": e.ClientConfig(c), "command": client} {
				if cc.Token != want {
					t.Errorf("%s: not the server's token", what)
				}
				nc, err := Connect(url, cc, "embedded-test")
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				nc.Close()
			}

			// A restart keeps the token.
			e.Shutdown()
			e2 := startEmbedded(t, c)
			if e2.Generated || e2.token != want {
				t.Fatalf("restart: generated %v, same token %v", e2.Generated, e2.token == want)
			}
			nc, err := Connect(e2.ClientURL(), client, "embedded-test")
			if err != nil {
				t.Fatalf("after a restart: %v", err)
			}
			nc.Close()
		})
	}
}

// TestEmbeddedTokenFileRefused: a token file group or others may read or
// write stops the server and the commands, and so does one that holds no
// token; the errors name the file and never hold the token. A missing file
// tells a command to start serve first.
func TestEmbeddedTokenFileRefused(t *testing.T) {
	const token = "a-token-someone-else-could-read-0123456789"
	tests := map[string]struct {
		content string
		mode    os.FileMode
		err     string
	}{
		"group readable":  {content: token + "\n", mode: 0o640, err: "has mode 0640"},
		"world readable":  {content: token + "\n", mode: 0o644, err: "has mode 0644"},
		"group writable":  {content: token + "\n", mode: 0o620, err: "has mode 0620"},
		"empty":           {content: "", mode: 0o600, err: "does not hold one token"},
		"too short":       {content: "short-token\n", mode: 0o600, err: "does not hold one token"},
		"two tokens":      {content: token + " " + token + "\n", mode: 0o600, err: "does not hold one token"},
		"a directory too": {mode: 0o700 | os.ModeDir, err: "is not a regular file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := embeddedConfig(t, "")
			path := TokenFile(c.Embedded)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.mode.IsDir() {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			e, err := StartEmbedded(c)
			if err == nil {
				e.Shutdown()
				t.Fatal("the server started")
			}
			_, cerr := EmbeddedClientConfig(c)
			for what, err := range map[string]error{"server": err, "command": cerr} {
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("%s: error %v, want one naming %s and saying %q", what, err, path, tc.err)
				}
				if err != nil && strings.Contains(err.Error(), token) {
					t.Errorf("%s: the error holds the token", what)
				}
			}
		})
	}

	c := embeddedConfig(t, "")
	_, err := EmbeddedClientConfig(c)
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), TokenFile(c.Embedded)) ||
		!strings.Contains(err.Error(), "start keyrelay serve first, or set keyrelay.nats.token") {
		t.Fatalf("no token file: %v", err)
	}
}

// TestEnsureTokenConcurrent: processes starting at once on one store
// directory end up with one token, generated once.
func TestEnsureTokenConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), TokenFileName)
	const n = 16
	tokens, generated, errs := make([]string, n), make([]bool, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tokens[i], generated[i], errs[i] = ensureToken(path)
		}()
	}
	wg.Wait()
	gens := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("%d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("%d got another token", i)
		}
		if generated[i] {
			gens++
		}
	}
	if gens != 1 {
		t.Fatalf("generated %d times, want once", gens)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+TokenFileName+".*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %q", left)
	}
}
