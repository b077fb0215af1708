package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/worker"
)

func dlqCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect and retry dead-lettered events"}
	var asJSON bool
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters with their reason and attempts",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			conn, err := app.Connect(c, "keyrelay-dlq", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			dls, err := worker.ListDeadLetters(cmd.Context(), conn.JS, limit)
			if err != nil {
				return err
			}
			out := newTermSafe(cmd.OutOrStdout())
			if asJSON {
				return json.NewEncoder(out).Encode(dls)
			}
			if len(dls) == 0 {
				fmt.Fprintln(out, "the DLQ is empty")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tFAILED AT\tSTATUS\tATTEMPTS\tEVENT\tSUBJECT\tREASON")
			for _, d := range dls {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Seq, d.FailedAt.Format(time.RFC3339), d.Status, d.Attempts, d.EventID, d.Subject, d.Reason)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().IntVar(&limit, "limit", 0, "show at most this many (0: all)")
	var all bool
	retry := &cobra.Command{
		Use:   "retry [SEQ...]",
		Short: "Send dead letters back through the pipeline once the cause is fixed",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			conn, err := app.Connect(c, "keyrelay-dlq", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			var seqs []uint64
			if all {
				dls, err := worker.ListDeadLetters(cmd.Context(), conn.JS, 0)
				if err != nil {
					return err
				}
				for _, d := range dls {
					seqs = append(seqs, d.Seq)
				}
			}
			for _, a := range args {
				s, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("%q is not a DLQ sequence", a)
				}
				seqs = append(seqs, s)
			}
			if len(seqs) == 0 {
				return fmt.Errorf("name the entries to retry (see `keyrelay dlq list`) or pass --all")
			}
			failed := 0
			out, errOut := newTermSafe(cmd.OutOrStdout()), newTermSafe(cmd.ErrOrStderr())
			for _, s := range seqs {
				if err := worker.RetryDeadLetter(cmd.Context(), conn.JS, s); err != nil {
					fmt.Fprintln(errOut, err)
					failed++
					continue
				}
				fmt.Fprintf(out, "retried %d\n", s)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d entries not retried", failed, len(seqs))
			}
			return nil
		},
	}
	retry.Flags().BoolVar(&all, "all", false, "retry every entry")
	var dryRun bool
	redact := &cobra.Command{
		Use:   "redact",
		Short: "Replace dead letters whose value is not proven sealed by their redacted summary (entries stored before keyrelay redacted them)",
		Long: "Applies the DLQ's rule to the entries already in it: an original is kept only when its event carries no value or its value\n" +
			"opens as a sealed envelope with the configured keyring or KMS. Every other original is replaced by its redacted summary\n" +
			"(ids, reason, size and SHA-256, never the payload) and deleted with its bytes overwritten. Values that cannot be opened\n" +
			"for now (a KMS outage) are left and listed: run again.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := openRecoveryTo(cmd.Context(), g, "keyrelay-dlq", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer env.close()
			rep, err := worker.RedactDeadLetters(cmd.Context(), env.js, env.d.Opener, dryRun)
			if rep != nil {
				out := newTermSafe(cmd.OutOrStdout())
				if asJSON {
					if jerr := json.NewEncoder(out).Encode(rep); jerr != nil {
						return jerr
					}
				} else {
					verb := "redacted"
					if dryRun {
						verb = "would redact"
					}
					for _, r := range rep.Redacted {
						fmt.Fprintf(out, "%s %d (%s, event %q): %s\n", verb, r.Seq, r.Subject, r.EventID, r.Why)
					}
					for _, r := range rep.Undecided {
						fmt.Fprintf(out, "undecided %d (%s, event %q): %s\n", r.Seq, r.Subject, r.EventID, r.Why)
					}
					fmt.Fprintf(out, "%d originals checked: %d kept (proven safe), %d %s, %d undecided\n",
						rep.Checked, rep.Kept, len(rep.Redacted), verb, len(rep.Undecided))
				}
			}
			if err != nil {
				return err
			}
			if len(rep.Undecided) > 0 {
				return fmt.Errorf("%d entries could not be decided now (their value could not be opened for a reason that may pass); run again", len(rep.Undecided))
			}
			return nil
		},
	}
	redact.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be redacted; change nothing")
	redact.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(list, retry, redact)
	return cmd
}
