// Package natsconn connects keyrelay to NATS: an external server or
// cluster with credentials, nkey, token or user/password and TLS, or the
// embedded in-process JetStream server used by default.
package natsconn

import (
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/settings"
)

// Options builds nats.Options from the configuration.
func Options(c settings.NATSConfig, name string) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey_file: %w", err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, errors.New("nats: cert_file and key_file must be set together")
		}
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return opts, nil
}

// Connect dials url with the configured options. url may list several
// servers separated by commas (a cluster's seeds): nats.go tries each
// until one answers, and reconnects to any server of the cluster after.
func Connect(url string, c settings.NATSConfig, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := Options(c, name)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", Redact(url), err)
	}
	return nc, nil
}

// Redact returns a comma-separated URL list with any user information
// (user:password@ or token@) replaced, for logs and errors.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := neturl.Parse(p); err == nil && u.User != nil {
			u.User = neturl.User("redacted")
			p = u.String()
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// Embedded is the in-process JetStream server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded runs nats-server in this process with JetStream stored
// under c.StoreDir, listening on c.Host:c.Port.
func StartEmbedded(c settings.EmbeddedConfig) (*Embedded, error) {
	host, port, dir := c.Host, c.Port, c.StoreDir
	if host == "" {
		host = "127.0.0.1"
	}
	if dir == "" {
		dir = "./data/nats"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	abs, _ := filepath.Abs(dir)
	// Fail clearly when the port is taken rather than inside the server.
	if l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
		return nil, fmt.Errorf("embedded nats: port %d on %s is not free: %w", port, host, err)
	} else {
		l.Close()
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "keyrelay-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   abs,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is where clients connect.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
