package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/events"
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
			fmt.Fprintf(cmd.ErrOrStderr(), "revision %d\n", rev)
			if sv := e.Sealed; sv != nil && sv.Alg != events.AlgA256GCM && !events.IsEnvelopeAlg(sv.Alg) {
				// A plaintext value (allow_plaintext_values) is kept as
				// published: its ct is the value. Show what it is, never it.
				shown := *e
				shown.Sealed = &events.SealedValue{Alg: sv.Alg}
				e = &shown
				fmt.Fprintf(cmd.ErrOrStderr(), "the value is not sealed (alg %q, %d bytes): not shown\n", sv.Alg, len(sv.Ciphertext))
			}
			enc := json.NewEncoder(newTermSafe(cmd.OutOrStdout()))
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
