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
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

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
			if viaNATS {
				c, log, lerr := g.load()
				if lerr != nil {
					return lerr
				}
				conn, cerr := app.Connect(c, "keyrelay-lookup-get", false, log)
				if cerr != nil {
					return cerr
				}
				defer conn.Close()
				s, err = (&lookupclient.NATS{Conn: conn.NC, Team: team, Token: token}).Get(cmd.Context(), args[0])
			} else {
				if token == "" {
					return errors.New("set KEYRELAY_TOKEN to a token of keyrelay.lookup.clients")
				}
				c := &lookupclient.HTTP{BaseURL: url, Token: token}
				if team != "" {
					s, err = c.GetTeam(cmd.Context(), team, args[0])
				} else {
					s, err = c.Get(cmd.Context(), args[0])
				}
			}
			if err != nil {
				return err
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(s)
		},
	}
	get.Flags().StringVar(&url, "url", "http://127.0.0.1:9470", "lookup listener")
	get.Flags().StringVar(&team, "team", "", "team (HTTP: must be the token's; NATS: selects the team subject, empty for global)")
	get.Flags().BoolVar(&viaNATS, "nats", false, "ask over NATS request-reply instead of HTTP")

	token := &cobra.Command{
		Use:   "token",
		Short: "Make a random lookup token and print it with its token_sha256 for keyrelay.lookup.clients",
		RunE: func(*cobra.Command, []string) error {
			b := make([]byte, 32)
			if _, err := io.ReadFull(rand.Reader, b); err != nil {
				return err
			}
			t := "krl_" + strings.TrimRight(base64.URLEncoding.EncodeToString(b), "=")
			sum := sha256.Sum256([]byte(t))
			fmt.Printf("token:        %s\ntoken_sha256: %s\n", t, hex.EncodeToString(sum[:]))
			return nil
		},
	}
	cmd.AddCommand(get, token)
	return cmd
}
