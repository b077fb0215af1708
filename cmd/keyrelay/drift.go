package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// exitError ends the command with a given exit status.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// ExitFailed is the exit status of a command whose work failed, in whole
// or in part: one convention for every command, so a script can tell "all
// done" (0) from anything less. A command that did part of its work prints
// its report first, then ends with a partialFailure.
const ExitFailed = 1

// partialFailure ends a command that did what it could and reported the
// rest as not done: exit status ExitFailed.
func partialFailure(format string, a ...any) error {
	return &exitError{code: ExitFailed, msg: fmt.Sprintf(format, a...)}
}

// ledgerSkippedFailure is the partialFailure of a command that passed over
// n unusable ledger entries (printed by printSkipped): their keys were not
// handled. nil when n is 0.
func ledgerSkippedFailure(cmd string, n int) error {
	if n == 0 {
		return nil
	}
	what := fmt.Sprintf("%d unusable ledger entries were", n)
	if n == 1 {
		what = "1 unusable ledger entry was"
	}
	return partialFailure("%s: %s skipped (see the warnings): their keys were not handled; repair or delete them", cmd, what)
}

// DriftExitCode is the exit status of `keyrelay drift` when drift was found.
const DriftExitCode = recovery.ExitDrift

func driftCmd(g *globals) *cobra.Command {
	var cfg recovery.Config
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "drift",
		Short: "Compare every key's secret in its backend with the ledger (read-only; exit 3 when drift is found)",
		Long: `drift reads, for every ledger entry in scope, the secret from the backend the
ledger says holds it and classifies it: ok, missing, stale (the value differs
from the ledger's newest; digests are compared, values never shown),
resurrected (deleted in the ledger but present), unowned (the name holds a
secret keyrelay does not own, or another key's) and, for backends that can
list, orphan (a keyrelay-owned secret of the team with no ledger entry).

Exit status: 0 clean, 3 drift found, 1 on errors (a secret that could not be
read, a ledger entry that could not be used, or no connection).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := checkScope(cfg.Teams, cfg.All); err != nil {
				return err
			}
			env, err := openRecoveryTo(ctx, g, "keyrelay-drift", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer env.close()
			rep, err := recovery.Drift(ctx, env.d, cfg)
			if err != nil {
				return err
			}
			out := newTermSafe(cmd.OutOrStdout())
			if asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				printDrift(out, rep)
			}
			switch {
			case rep.Errors() > 0:
				return &exitError{code: ExitFailed, msg: fmt.Sprintf("drift: %d secrets could not be read", rep.Errors())}
			case len(rep.LedgerSkipped) > 0:
				// Their keys were not checked: "clean" or "drift" would
				// speak for keys the report never saw.
				return ledgerSkippedFailure("drift", len(rep.LedgerSkipped))
			case rep.Drifted() > 0:
				return &exitError{code: DriftExitCode, msg: fmt.Sprintf("drift: %d found", rep.Drifted())}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cfg.Teams, "team", nil, "team id (repeatable)")
	f.BoolVar(&cfg.All, "all", false, "every team in the ledger")
	f.StringVar(&cfg.Backend, "backend", "", "only keys the ledger places on this backend (a key_management_system name)")
	f.IntVar(&cfg.Concurrency, "concurrency", 8, "reads in flight")
	f.Float64Var(&cfg.Rate, "rate", 0, "reads per second per backend, on top of the providers' own quota limits (0: only theirs)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON (every row, ok ones included)")
	f.BoolVar(&cfg.Strict, "strict", false, "fail (exit 1) before checking anything when a ledger entry in scope cannot be used (without it: reported, the others checked, exit 1)")
	return cmd
}

// printDrift writes the summary per team and backend, then every row that
// is not ok.
func printDrift(w io.Writer, rep *recovery.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"TEAM", "BACKEND"}
	for _, s := range recovery.Statuses {
		head = append(head, strings.ToUpper(string(s)))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, s := range rep.Summary {
		cells := []string{s.Team, s.Backend}
		for _, st := range recovery.Statuses {
			cells = append(cells, fmt.Sprint(s.Counts[st]))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
	if len(rep.Unlisted) > 0 {
		fmt.Fprintf(w, "\norphans not searched (the backend cannot list): %s\n", strings.Join(rep.Unlisted, ", "))
	}
	n := 0
	for _, r := range rep.Rows {
		if r.Status != recovery.StatusOK {
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(w, "\nno drift")
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tTEAM\tKEY\tBACKEND\tSECRET\tGENERATION\tDETAIL")
	for _, r := range rep.Rows {
		if r.Status == recovery.StatusOK {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Status, r.Team, r.Key, r.Backend, r.SecretRef, r.Generation, r.Detail)
	}
	_ = tw.Flush()
}

// recoveryEnv is what the recovery commands work with: the connection, the
// ledger, the team settings, the providers and the openers of sealed
// values. close releases them.
type recoveryEnv struct {
	d     recovery.Deps
	c     *settings.Config
	js    jetstream.JetStream
	teams *worker.Teams
	// sealer seals new values (keyrelay rotate).
	sealer events.Sealer
	close  func()
}

// openRecoveryTo connects to NATS and loads the recovery commands' deps.
// Warnings about ledger entries passed over go to stderr: the command's
// cmd.ErrOrStderr(), so an embedding caller (or a test) that set the
// command's error writer receives them.
func openRecoveryTo(ctx context.Context, g *globals, name string, stderr io.Writer) (*recoveryEnv, error) {
	c, log, err := g.load()
	if err != nil {
		return nil, err
	}
	conn, err := app.Connect(c, name, false, log)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*recoveryEnv, error) {
		conn.Close()
		return nil, err
	}
	sealing, err := app.LoadSealing(ctx, c, false, log)
	if err != nil {
		return fail(err)
	}
	lkv, err := conn.JS.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		return fail(fmt.Errorf("ledger: %w", err))
	}
	tkv, err := conn.JS.KeyValue(ctx, worker.TeamsBucket)
	if err != nil {
		return fail(fmt.Errorf("team settings: %w", err))
	}
	teams := worker.NewTeams(tkv, nil, log)
	if err := teams.Start(ctx); err != nil {
		return fail(fmt.Errorf("team settings: %w", err))
	}
	registry := app.Registry()
	// Drift reads and restore writes count against the same provider
	// quotas as the workers: share them with the running processes.
	closeQuotas := func() {}
	if c.Keyrelay.Quotas.IsShared() {
		q, err := app.StartQuotas(ctx, c, conn.JS, log)
		if err != nil {
			return fail(fmt.Errorf("provider quotas: %w", err))
		}
		registry.SetQuotas(q)
		closeQuotas = q.Close
	}
	okv, err := conn.JS.KeyValue(ctx, worker.OwnershipBucket)
	if err != nil {
		return fail(fmt.Errorf("ownership bucket: %w", err))
	}
	d := recovery.Deps{Ledger: worker.NewLedger(lkv, conn.JS.Conn()), Settings: c, Registry: registry, Opener: sealing.Opener,
		TeamSettings: func(t string) *events.TeamSettings { return teams.Cached(t).Settings }, Logger: log, Ownership: okv,
		LedgerSkipped: printSkipped(stderr)}
	return &recoveryEnv{d: d, c: c, js: conn.JS, teams: teams, sealer: sealing.Sealer, close: func() { registry.Close(); closeQuotas(); conn.Close() }}, nil
}

// printSkipped prints each ledger entry a command passed over because it
// cannot be used (never a value); the command goes on without it and ends
// with exit status ExitFailed (drift and restore refuse to start instead
// with --strict).
func printSkipped(w io.Writer) func(worker.SkippedEntry) {
	return func(se worker.SkippedEntry) {
		fmt.Fprintf(w, "WARNING: ledger entry %s skipped: %s; its key is not handled (repair or delete the entry)\n", se.Key, se.Reason)
	}
}

// checkScope validates the --team / --all scope of drift and restore.
func checkScope(teams []string, all bool) error {
	for _, t := range teams {
		if err := events.ValidateID("team_id", t); err != nil {
			return err
		}
	}
	if all == (len(teams) > 0) {
		return fmt.Errorf("name teams with --team, or --all (not both)")
	}
	return nil
}

// printJSON writes a report as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
