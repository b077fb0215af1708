package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/worker"
)

func ledgerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "ledger", Short: "Inspect the ledger (applied generation, provider version, claim) of a key"}
	var team, key string
	show := &cobra.Command{
		Use:   "show",
		Short: "Show one key's ledger entry (the sealed value is shown sealed)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			conn, err := app.Connect(c, "keyrelay-ledger", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			kv, err := conn.JS.KeyValue(cmd.Context(), worker.LedgerBucket)
			if err != nil {
				return err
			}
			e, rev, err := worker.NewLedger(kv).Get(cmd.Context(), team, key)
			if err != nil {
				return err
			}
			if e == nil {
				return fmt.Errorf("no ledger entry for team %s key %s", team, key)
			}
			fmt.Fprintf(os.Stderr, "revision %d\n", rev)
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(e)
		},
	}
	show.Flags().StringVar(&team, "team", "", "team id")
	show.Flags().StringVar(&key, "key", "", "key id")
	_ = show.MarkFlagRequired("team")
	_ = show.MarkFlagRequired("key")
	cmd.AddCommand(show)
	return cmd
}
