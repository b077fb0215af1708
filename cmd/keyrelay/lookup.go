package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/settings"
)

// defaultLookupURL is the lookup listener of the embedded default.
const defaultLookupURL = "http://" + settings.DefaultLookupAddr

// lookupURL is the base URL of the lookup listener at l.Addr, as a client
// on the same machine reaches it: an unspecified host (0.0.0.0, ::, empty)
// is the loopback address.
func lookupURL(l settings.LookupConfig) (string, error) {
	if !l.HTTPEnabled() {
		return "", errors.New("keyrelay.lookup.addr is off, so HTTP lookups are disabled: use --nats, or --url")
	}
	host, port, err := net.SplitHostPort(l.Addr)
	if err != nil {
		return "", fmt.Errorf("keyrelay.lookup.addr %q: %w", l.Addr, err)
	}
	if port == "0" {
		return "", errors.New("keyrelay.lookup.addr has port 0 (chosen at start-up; serve logs it): pass --url")
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// noLookupService reports whether err says no lookup service listens on
// the request's NATS subject.
func noLookupService(err error) bool {
	var e *lookupclient.Error
	return errors.As(err, &e) && e.Status == 503 && strings.HasPrefix(e.Reason, lookupclient.NoServiceReason)
}

func lookupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "lookup", Short: "Read secrets through the lookup API; make lookup tokens"}
	var url, team string
	var viaNATS bool
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Read one secret (token from KEYRELAY_TOKEN); prints the JSON answer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			token := os.Getenv("KEYRELAY_TOKEN")
			var s *lookupclient.Secret
			var err error
			var c *settings.Config
			var log *zap.Logger
			if viaNATS || !cmd.Flags().Changed("url") {
				if c, log, err = g.load(); err != nil {
					return err
				}
			}
			if viaNATS {
				conn, cerr := app.Connect(c, "keyrelay-lookup-get", false, log)
				if cerr != nil {
					return cerr
				}
				defer conn.Close()
				s, err = (&lookupclient.NATS{Conn: conn.NC, Team: team, Token: token}).Get(cmd.Context(), args[0])
				if noLookupService(err) && c.Keyrelay.NATS.IsEmbedded() {
					return fmt.Errorf("%w (on the embedded NATS server, NATS lookups are off unless serve runs with "+
						"keyrelay.lookup.nats: true; ask over HTTP, without --nats)", err)
				}
			} else {
				if token == "" {
					return errors.New("set KEYRELAY_TOKEN to a token of keyrelay.lookup.clients")
				}
				base := url
				if !cmd.Flags().Changed("url") {
					if base, err = lookupURL(c.Keyrelay.Lookup); err != nil {
						return err
					}
				}
				hc := &lookupclient.HTTP{BaseURL: base, Token: token}
				if team != "" {
					s, err = hc.GetTeam(cmd.Context(), team, args[0])
				} else {
					s, err = hc.Get(cmd.Context(), args[0])
				}
			}
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(s)
		},
	}
	get.Flags().StringVar(&url, "url", "", "lookup listener (default: http:// and keyrelay.lookup.addr of --config, else "+defaultLookupURL+")")
	get.Flags().StringVar(&team, "team", "", "team (HTTP: must be the token's; NATS: selects the team subject, empty for global)")
	get.Flags().BoolVar(&viaNATS, "nats", false, "ask over NATS request-reply instead of HTTP (on the embedded server only with keyrelay.lookup.nats: true)")

	token := &cobra.Command{
		Use:   "token",
		Short: "Make a random lookup token and print it with its token_sha256 for keyrelay.lookup.clients",
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, 32)
			if _, err := io.ReadFull(rand.Reader, b); err != nil {
				return err
			}
			t := "krl_" + strings.TrimRight(base64.URLEncoding.EncodeToString(b), "=")
			sum := sha256.Sum256([]byte(t))
			fmt.Fprintf(cmd.OutOrStdout(), "token:        %s\ntoken_sha256: %s\n", t, hex.EncodeToString(sum[:]))
			return nil
		},
	}
	cmd.AddCommand(get, token)
	return cmd
}
