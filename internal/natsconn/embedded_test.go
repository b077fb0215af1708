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
		"a bcrypt hash":   {content: bcryptLike + "\n", mode: 0o600, err: `starts with "$2"`},
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

// bcryptLike has the form of a bcrypt hash ($2a$<cost>$<53 characters>).
const bcryptLike = "$2a$11$" + "q1ATzJ3Gf7pD1W6e1mUvXOaBpJcX0pYt4u6q1rG2Y8v0u5h3k9mLe"

// TestEmbeddedBcryptTokenRefused: nats-server reads a token starting with
// "$2" as a bcrypt hash, so a client presenting the configured string
// itself, as keyrelay's clients do, would be refused with an authorization
// error. Such a keyrelay.nats.token stops the embedded server and the
// commands with a configuration error naming the setting (never the
// token); "$2" anywhere but at the start is an ordinary token.
func TestEmbeddedBcryptTokenRefused(t *testing.T) {
	tests := map[string]struct {
		token   string
		refused bool
	}{
		"bcrypt $2a$":         {token: bcryptLike, refused: true},
		"bcrypt $2y$":         {token: "$2y$10$" + bcryptLike[7:], refused: true},
		"$2 and anything":     {token: "$2-not-really-a-hash-0123456789", refused: true},
		"$2 inside the token": {token: "token-with-$2a$10$-inside-0123456789"},
		"a $ at the start":    {token: "$3-dollar-token-0123456789abcdef"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := embeddedConfig(t, tc.token)
			e, err := StartEmbedded(c)
			_, cerr := EmbeddedClientConfig(c)
			if !tc.refused {
				if err != nil || cerr != nil {
					t.Fatalf("server: %v; command: %v", err, cerr)
				}
				t.Cleanup(e.Shutdown)
				nc, err := Connect(e.ClientURL(), e.ClientConfig(c), "embedded-test")
				if err != nil {
					t.Fatalf("a client with the token: %v", err)
				}
				nc.Close()
				return
			}
			if err == nil {
				defer e.Shutdown()
				_, cerr := Connect(e.ClientURL(), e.ClientConfig(c), "embedded-test")
				t.Fatalf("the server started with a token it reads as a bcrypt hash (a client with the token: %v)", cerr)
			}
			for what, err := range map[string]error{"server": err, "command": cerr} {
				if !errors.Is(err, ErrBcryptToken) || !strings.Contains(err.Error(), "keyrelay.nats.token") {
					t.Errorf("%s: error %v, want %v naming keyrelay.nats.token", what, err, ErrBcryptToken)
				}
				if err != nil && strings.Contains(err.Error(), tc.token) {
					t.Errorf("%s: the error holds the token", what)
				}
			}
		})
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
