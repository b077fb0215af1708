package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
)

func confirmationsCmd(g *globals) *cobra.Command {
	var follow, asJSON bool
	var team string
	var from uint64
	cmd := &cobra.Command{
		Use:   "confirmations",
		Short: "Show confirmations (all retained, or --follow for new ones as they arrive)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			conn, err := app.Connect(c, "keyrelay-confirmations", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			filter := ""
			if team != "" {
				if err := events.ValidateID("team", team); err != nil {
					return err
				}
				filter = events.ConfirmationsPrefix + "." + team + ".>"
			}
			ctx := cmd.Context()
			out := newTermSafe(cmd.OutOrStdout())
			enc := json.NewEncoder(out)
			show := func(cf *events.Confirmation) {
				if asJSON {
					_ = enc.Encode(cf)
				} else {
					fmt.Fprintf(out, "%s %-10s %-22s team=%s key=%s event=%s gen=%d provider=%s ref=%s version=%s attempts=%d%s\n",
						cf.Time.Format(time.RFC3339), cf.Status, cf.EventType, cf.TeamID, cf.KeyID, cf.EventID, cf.Generation,
						cf.Provider, cf.SecretRef, cf.ProviderVersion, cf.Attempts, reasonSuffix(cf))
				}
			}
			if !follow {
				return client.ListConfirmations(ctx, conn.JS, filter, func(seq uint64, cf *events.Confirmation) error {
					if seq < from {
						return nil
					}
					show(cf)
					return nil
				})
			}
			return client.FollowConfirmations(ctx, conn.JS, from, filter, func(_, _ uint64, cf *events.Confirmation) error {
				show(cf)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "wait for new confirmations")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines")
	cmd.Flags().StringVar(&team, "team", "", "only this team")
	cmd.Flags().Uint64Var(&from, "from-seq", 0, "start at this confirmations-stream sequence (with or without --follow)")
	return cmd
}

func reasonSuffix(c *events.Confirmation) string {
	s := ""
	if c.Duplicate {
		s += " duplicate"
	}
	if c.Reason != "" {
		s += fmt.Sprintf(" reason=%q", c.Reason)
	}
	return s
}
