package natsconn

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/keyrelay/keyrelay/settings"
)

// TokenFileName is the file, in the embedded server's store directory,
// holding the client token StartEmbedded generates when keyrelay.nats.token
// is not set. Every keyrelay command that uses the embedded server reads it
// from there.
const TokenFileName = "client.token"

const (
	// tokenBytes is the entropy of a generated token: 32 random bytes,
	// 43 characters of unpadded base64url.
	tokenBytes = 32
	// minFileTokenLen is the shortest token a token file may hold.
	minFileTokenLen = 32
	// maxTokenFileBytes bounds what is read from a token file.
	maxTokenFileBytes = 4096
)

// ErrBcryptToken means a token for the embedded server starts with "$2":
// nats-server reads such a token as a bcrypt hash of the real one, so a
// client presenting the same string, as keyrelay's own clients do, would be
// refused. keyrelay.nats.token is both the server's token and its clients',
// so it must be the plain token; choose one that does not start with "$2".
var ErrBcryptToken = errors.New(`starts with "$2", which nats-server reads as a bcrypt hash, not a token`)

// bcryptPrefix is the start of every bcrypt hash ($2a$, $2b$, $2x$, $2y$):
// a token starting with it is refused rather than handed to the server.
const bcryptPrefix = "$2"

// checkToken refuses a token nats-server would not take as a plain token.
// The error never holds the token.
func checkToken(token string) error {
	if strings.HasPrefix(token, bcryptPrefix) {
		return ErrBcryptToken
	}
	return nil
}

// ErrNoToken means the embedded server's token file does not exist and
// keyrelay.nats.token is not set: keyrelay serve has not run with this
// store directory yet.
var ErrNoToken = errors.New("no client token for the embedded NATS server")

// Embedded is the in-process JetStream server.
type Embedded struct {
	srv   *server.Server
	token string
	// TokenFile is the file holding the generated client token; "" when
	// keyrelay.nats.token is the token.
	TokenFile string
	// Generated is true when this start generated the token (and wrote
	// TokenFile).
	Generated bool
}

// StartEmbedded runs nats-server in this process with JetStream stored
// under c.Embedded.StoreDir, listening on c.Embedded.Host:Port.
//
// The server requires a token from every client. It is c.Token
// (keyrelay.nats.token) when set; otherwise the token in TokenFileName in
// the store directory, which the first start generates (32 random bytes,
// base64url; written mode 0600 and linked into place, so a reader never sees
// a partial file) and later starts reuse. A token file that group or others
// may read or write is refused: the token may have been seen, so delete the
// file to get a new one. The token is never logged nor put in an error.
//
// A token starting with "$2" is refused (ErrBcryptToken): nats-server would
// read it as a bcrypt hash and refuse every client presenting it, keyrelay's
// own included. The embedded server takes no hashed token: keyrelay's
// clients connect with keyrelay.nats.token itself.
func StartEmbedded(c settings.NATSConfig) (*Embedded, error) {
	if err := checkToken(c.Token); err != nil {
		return nil, fmt.Errorf("embedded nats: keyrelay.nats.token %w: the embedded server's clients, keyrelay's own "+
			"included, present keyrelay.nats.token itself, so it must be the plain token; choose one that does not start with %q",
			err, bcryptPrefix)
	}
	host, port := c.Embedded.Host, c.Embedded.Port
	if host == "" {
		host = settings.DefaultEmbeddedHost
	}
	dir := storeDir(c.Embedded)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	e := &Embedded{token: c.Token}
	if e.token == "" {
		e.TokenFile = TokenFile(c.Embedded)
		var err error
		if e.token, e.Generated, err = ensureToken(e.TokenFile); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
	}
	// Fail clearly when the port is taken rather than inside the server.
	if l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
		return nil, fmt.Errorf("embedded nats: port %d on %s is not free: %w", port, host, err)
	} else {
		l.Close()
	}
	srv, err := server.NewServer(&server.Options{
		ServerName:    "keyrelay-embedded",
		Host:          host,
		Port:          port,
		JetStream:     true,
		StoreDir:      dir,
		NoSigs:        true,
		MaxPayload:    1 << 20,
		Authorization: e.token,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	e.srv = srv
	return e, nil
}

// ClientURL is where clients connect (it holds no credentials).
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// ClientConfig returns c with the token this server requires.
func (e *Embedded) ClientConfig(c settings.NATSConfig) settings.NATSConfig {
	c.Token = e.token
	return c
}

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// EmbeddedClientConfig returns c with the token the embedded server that c
// describes requires, for a process that connects to it without starting
// it: c itself when keyrelay.nats.token is set, otherwise c with the token
// read from TokenFile(c.Embedded). The error names the file when it is
// missing (ErrNoToken), unreadable or refused.
func EmbeddedClientConfig(c settings.NATSConfig) (settings.NATSConfig, error) {
	if c.Token != "" {
		if err := checkToken(c.Token); err != nil {
			return c, fmt.Errorf("embedded nats: keyrelay.nats.token %w: choose one that does not start with %q", err, bcryptPrefix)
		}
		return c, nil
	}
	path := TokenFile(c.Embedded)
	tok, err := readToken(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c, fmt.Errorf("embedded nats: %w: %s does not exist: start keyrelay serve first, or set keyrelay.nats.token "+
			"(and give this command the keyrelay.nats.embedded.store_dir serve runs with)", ErrNoToken, path)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return c, fmt.Errorf("embedded nats: cannot read the client token: %w: run this command as the user "+
				"keyrelay serve runs as, or set keyrelay.nats.token", err)
		}
		return c, fmt.Errorf("embedded nats: %w", err)
	}
	c.Token = tok
	return c, nil
}

// TokenFile is the path of the embedded server's generated client token:
// TokenFileName in the store directory, made absolute (commands that find
// the embedded server through a relative store_dir depend on their working
// directory).
func TokenFile(e settings.EmbeddedConfig) string {
	return filepath.Join(storeDir(e), TokenFileName)
}

// storeDir is the embedded server's store directory, absolute.
func storeDir(e settings.EmbeddedConfig) string {
	dir := e.StoreDir
	if dir == "" {
		dir = settings.DefaultEmbeddedStoreDir
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return dir
}

// ensureToken returns the token in path, generating the file first when
// it does not exist; generated says it did.
func ensureToken(path string) (token string, generated bool, err error) {
	token, err = readToken(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("client token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	// Written whole under a temporary name (mode 0600), then linked to
	// path: a reader sees the complete file or none, and when another
	// process got there first its file is kept (link does not replace).
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+TokenFileName+".*")
	if err != nil {
		return "", false, fmt.Errorf("client token: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(token + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, fmt.Errorf("client token: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		token, err = readToken(path)
		return token, false, err
	} else if err != nil {
		return "", false, fmt.Errorf("client token: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return token, true, nil
}

// readToken reads a token file, refusing one that group or others may
// read or write. Errors name the file, never its content.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("client token %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("client token %s has mode %04o: group or others may read or replace it, so the token may "+
			"have been seen; delete the file and restart keyrelay serve to generate a new one (or chmod 600 it if "+
			"nobody else can have read it)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("client token %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(b) > maxTokenFileBytes || len(tok) < minFileTokenLen || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("client token %s does not hold one token of %d to %d characters; delete it and restart "+
			"keyrelay serve to generate a new one", path, minFileTokenLen, maxTokenFileBytes)
	}
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("client token %s %w; delete it and restart keyrelay serve to generate a new one", path, err)
	}
	return tok, nil
}
