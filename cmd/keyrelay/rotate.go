package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/worker"
)

func rotateCmd(g *globals) *cobra.Command {
	var (
		sel                    jobs.Selection
		olderThan, keysFile    string
		id, prefix             string
		bytes, window          int
		rate                   float64
		grace                  time.Duration
		dryRun, asJSON, detach bool
	)
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate keys in bulk: a durable job publishing key.rotated events with fresh values",
		Long: `rotate selects keys from the ledger (--team, --all, --older-than, --backend,
--keys-file), saves the job (its plan: keys, event ids, generations; never a
value) in JetStream, then publishes one key.rotated event per key with a fresh
value from crypto/rand in the gateway's format (sk- and 22 base64url
characters, as LiteLLM makes them), sealed, carrying the job id. A job that
stops is continued with 'keyrelay jobs resume ID' without rotating a key
twice; 'keyrelay jobs status ID' counts its confirmations.

Exit status: 0 when every selected key's event was published (or, with
--dry-run or --detach, planned), 1 otherwise: a ledger entry in scope that
could not be used (its key is left out of the job; printed on stderr), or
a job cancelled while it was published.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if olderThan != "" {
				if sel.OlderThan, err = jobs.ParseAge(olderThan); err != nil {
					return err
				}
			}
			if keysFile != "" {
				if sel.Keys, err = readKeysFile(keysFile); err != nil {
					return err
				}
			}
			if err := sel.Validate(); err != nil {
				return err
			}
			env, err := openRecoveryTo(ctx, g, "keyrelay-rotate", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer env.close()
			store, err := jobs.EnsureStore(ctx, env.js, env.c.Keyrelay.Streams.Replicas)
			if err != nil {
				return err
			}
			store.Logger = env.d.Logger
			// Unusable entries are printed and counted: their keys are not
			// in the job, so the command ends with exit status 1.
			skipped := 0
			d := jobs.Deps{JS: env.js, Ledger: env.d.Ledger, Store: store, Sealer: env.sealer, Logger: env.d.Logger,
				LedgerSkipped: func(se worker.SkippedEntry) { skipped++; env.d.LedgerSkipped(se) }}
			spec := jobs.Spec{ID: id, Selection: sel, Format: jobs.KeyFormat{Prefix: prefix, Bytes: bytes}, Rate: rate, Grace: grace, Window: window}
			j, plan, err := jobs.Plan(ctx, d, spec)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dryRun {
				if asJSON {
					if err := printJSON(out, map[string]any{"job": j, "keys": plan}); err != nil {
						return err
					}
					return ledgerSkippedFailure("rotate", skipped)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TEAM\tKEY\tBACKEND\tSECRET\tGENERATION")
				for _, t := range plan {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", t.Team, t.Key, t.Backend, t.SecretRef, t.Generation)
				}
				_ = tw.Flush()
				fmt.Fprintf(out, "\n%d keys would be rotated (dry run: nothing saved, nothing published)\n", len(plan))
				return ledgerSkippedFailure("rotate", skipped)
			}
			if len(plan) == 0 {
				fmt.Fprintln(out, "nothing to rotate")
				return ledgerSkippedFailure("rotate", skipped)
			}
			if err := store.Create(ctx, j, plan); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "job %s: %d keys (if it stops, continue with: keyrelay jobs resume %s)\n", j.ID, len(plan), j.ID)
			if detach {
				fmt.Fprintln(out, j.ID)
				return ledgerSkippedFailure("rotate", skipped)
			}
			if err := runJob(ctx, cmd, d, j.ID, asJSON); err != nil {
				return err
			}
			return ledgerSkippedFailure("rotate", skipped)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&sel.Teams, "team", nil, "rotate this team's keys (repeatable)")
	f.BoolVar(&sel.All, "all", false, "rotate every team's keys")
	f.StringVar(&olderThan, "older-than", "", "only keys whose value is older than this (90d, 36h)")
	f.StringVar(&sel.Backend, "backend", "", "only keys the ledger places on this backend")
	f.StringVar(&keysFile, "keys-file", "", "only these keys: a file of 'team key' (or team/key) lines; - for stdin")
	f.StringVar(&id, "job-id", "", "the job's id (default: a fresh job-<time>-<hex>)")
	f.StringVar(&prefix, "key-prefix", jobs.DefaultKeyFormat.Prefix, "prefix of generated values")
	f.IntVar(&bytes, "key-bytes", jobs.DefaultKeyFormat.Bytes, "random bytes in each generated value (at least 16)")
	f.Float64Var(&rate, "rate", 0, "events published per second at most (0: no cap)")
	f.IntVar(&window, "window", jobs.WindowDefault, "events published and not yet confirmed at most: jobs running at once share the bulk lane by it")
	f.DurationVar(&grace, "grace", 0, "grace period of the previous values (grace_period_seconds)")
	f.BoolVar(&dryRun, "dry-run", false, "list the keys it would rotate; save and publish nothing")
	f.BoolVar(&detach, "detach", false, "save the job and print its id without publishing (run it with 'jobs resume')")
	f.BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}

// readKeysFile reads "team key", "team/key" or "team,key" lines (# comments).
func readKeysFile(path string) ([]jobs.TeamKey, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var out []jobs.TeamKey
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == '/' || r == ',' })
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want 'team key'", path, n)
		}
		out = append(out, jobs.TeamKey{Team: fields[0], Key: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return out, nil
}

// runJob publishes a job, showing its progress, then its status.
func runJob(ctx context.Context, cmd *cobra.Command, d jobs.Deps, id string, asJSON bool) error {
	stderr := cmd.ErrOrStderr()
	var bar *progressbar.ProgressBar
	enc := json.NewEncoder(stderr)
	var last time.Time
	tty := false
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	j, err := jobs.Run(ctx, d, id, func(p jobs.Progress) {
		if tty {
			if bar == nil {
				bar = progressbar.NewOptions(p.Total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("publishing"),
					progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("keys"),
					progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
			}
			_ = bar.Set(p.Published)
			return
		}
		if p.Published != p.Total && time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		_ = enc.Encode(map[string]any{"progress": "publish", "job": id, "published": p.Published, "total": p.Total,
			"events_per_second": float64(p.Published) / max(p.Elapsed.Seconds(), 0.001)})
	})
	if err != nil {
		if errors.Is(err, jobs.ErrCancelled) {
			// Cancelled from elsewhere while this command published: the
			// rest of its keys are not rotated, which a script must see.
			return partialFailure("job %s was cancelled after %d of %d events; the others are not published", id, j.Cursor, j.Total)
		}
		if j != nil && j.State == jobs.StateRunning {
			return fmt.Errorf("%w (continue with: keyrelay jobs resume %s)", err, id)
		}
		return err
	}
	fmt.Fprintf(stderr, "job %s: %d events published; follow it with: keyrelay jobs status %s --watch\n", id, j.Total, id)
	if asJSON {
		return printJSON(cmd.OutOrStdout(), j)
	}
	fmt.Fprintln(cmd.OutOrStdout(), id)
	return nil
}

func jobsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "Bulk jobs: list, status, cancel, resume"}
	var asJSON, watch bool
	open := func(cmd *cobra.Command) (*recoveryEnv, jobs.Deps, error) {
		env, err := openRecoveryTo(cmd.Context(), g, "keyrelay-jobs", cmd.ErrOrStderr())
		if err != nil {
			return nil, jobs.Deps{}, err
		}
		store, err := jobs.EnsureStore(cmd.Context(), env.js, env.c.Keyrelay.Streams.Replicas)
		if err != nil {
			env.close()
			return nil, jobs.Deps{}, err
		}
		store.Logger = env.d.Logger
		return env, jobs.Deps{JS: env.js, Ledger: env.d.Ledger, Store: store, Sealer: env.sealer, Logger: env.d.Logger}, nil
	}
	list := &cobra.Command{Use: "list", Short: "List jobs, newest first", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		env, d, err := open(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		// Records List could not use are listed after the good jobs, and
		// make the command fail (a *jobs.ListError names their keys).
		all, err := d.Store.List(cmd.Context())
		var corrupt *jobs.ListError
		if err != nil && !errors.As(err, &corrupt) {
			return err
		}
		if asJSON {
			if err := printJSON(cmd.OutOrStdout(), all); err != nil {
				return err
			}
		} else {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tSTATE\tPUBLISHED\tTOTAL\tCREATED")
			for _, j := range all {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", j.ID, j.State, j.Cursor, j.Total, j.Created.Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if corrupt != nil {
			return corrupt
		}
		return nil
	}}
	status := &cobra.Command{Use: "status ID", Short: "A job's progress from its confirmations", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		env, d, err := open(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		return showStatus(cmd, d, args[0], asJSON, watch)
	}}
	status.Flags().BoolVar(&watch, "watch", false, "follow the job until every event is confirmed")
	cancel := &cobra.Command{Use: "cancel ID", Short: "Stop a job (events already published are still applied)", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		env, d, err := open(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		j, err := d.Store.Cancel(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "job %s cancelled after %d of %d events\n", j.ID, j.Cursor, j.Total)
		return nil
	}}
	resume := &cobra.Command{Use: "resume ID", Short: "Continue publishing a job from its saved cursor", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		env, d, err := open(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		return runJob(cmd.Context(), cmd, d, args[0], asJSON)
	}}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "JSON output")
	cmd.AddCommand(list, status, cancel, resume)
	return cmd
}

// showStatus prints a job's status once, or with --watch until it is done:
// a progress bar on a terminal, JSON lines otherwise.
func showStatus(cmd *cobra.Command, d jobs.Deps, id string, asJSON, watch bool) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	tty := false
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	var bar *progressbar.ProgressBar
	// One reader for the whole watch: it reads the plan once and each
	// final confirmation once.
	r := jobs.NewStatusReader(d.JS, d.Store, id)
	for {
		st, err := r.Read(ctx)
		if err != nil {
			return err
		}
		done := st.Done()
		switch {
		case watch && tty && !asJSON:
			if bar == nil {
				bar = progressbar.NewOptions(st.Job.Total, progressbar.OptionSetWriter(out), progressbar.OptionShowCount(),
					progressbar.OptionShowIts(), progressbar.OptionSetItsString("keys"), progressbar.OptionSetPredictTime(true))
			}
			_ = bar.Set(st.Rotated + st.Superseded + st.Failed)
			desc := fmt.Sprintf("%s: rotated %d, failed %d", st.Job.State, st.Rotated, st.Failed)
			if st.Stalled != "" {
				desc += " (stalled: " + st.Stalled + ")"
			}
			bar.Describe(desc)
			if done {
				fmt.Fprintln(out)
				printStatus(out, st)
			}
		case asJSON || watch:
			if err := json.NewEncoder(out).Encode(st); err != nil {
				return err
			}
		default:
			printStatus(out, st)
		}
		if !watch || done {
			if st.Failed > 0 && done {
				return partialFailure("job %s: %d keys failed", id, st.Failed)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func printStatus(w io.Writer, st *jobs.Status) {
	j := st.Job
	fmt.Fprintf(w, "job %s (%s): %d keys, %d published\n", j.ID, j.State, j.Total, j.Cursor)
	fmt.Fprintf(w, "rotated %d, superseded %d, failed %d, remaining %d", st.Rotated, st.Superseded, st.Failed, st.Remaining)
	if st.Rate > 0 {
		fmt.Fprintf(w, "; %.1f keys/s", st.Rate)
		if st.ETA > 0 {
			fmt.Fprintf(w, ", about %v left", st.ETA.Round(time.Second))
		}
	}
	fmt.Fprintln(w)
	if st.Stalled != "" {
		fmt.Fprintf(w, "stalled: %s\n", st.Stalled)
	}
	for _, f := range st.Failures {
		fmt.Fprintf(w, "  %s %s/%s: %s\n", f.Status, f.Team, f.Key, f.Reason)
	}
}
