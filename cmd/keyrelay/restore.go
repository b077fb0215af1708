package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

func restoreCmd(g *globals) *cobra.Command {
	var cfg recovery.RestoreConfig
	var asJSON bool
	var to string
	var options []string
	var fromSeq uint64
	var since, until string
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Return every key in scope to its newest ledger state in its backend (only what drift finds wrong)",
		Long: `restore runs the drift report, then fixes its rows from the ledger: a missing
or stale value is written again (the ledger's sealed value, opened here), a
resurrected secret is deleted. Unowned names are left alone unless --adopt.
Orphans are reported, not deleted.

Live workers may run meanwhile: each key is claimed in the ledger before its
write, and a key a worker moved to a newer generation since the report is
skipped. Writes carry the ledger's event id as the idempotency key, so a
restore run again (or killed and run again) writes no extra version.

With --to BACKEND (and --option key=value for its provider options), the
newest value of every live key in scope is copied from the ledger into that
backend instead, under the name its settings give; keys already there are
skipped, so a second copy writes nothing. The ledger is not changed.

With --until T (and optionally --since T or --from-seq N), the state as of T
is rebuilt from the events stream instead (key and team-settings events in
stream order, by the workers' rules) and written into the --to backend: live
keys at their value as of T under the names the team's settings of T give,
keys deleted as of T removed. T is RFC 3339 or a duration ago ("90m").
Events the stream's retention dropped cannot be replayed: the report says
which range is gone and marks the rebuild incomplete.

Exit status: 0 when everything was fixed or nothing was wrong, 1 when a row
failed, a ledger entry in scope could not be used (its key was not
handled), or a rebuild with --until is incomplete (also with --dry-run):
the report is printed first in every case.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if cfg.Resume == "" {
				if err := checkScope(cfg.Teams, cfg.All); err != nil {
					return err
				}
			}
			env, err := openRecoveryTo(ctx, g, "keyrelay-restore", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer env.close()
			d, c := env.d, env.c
			cfg.Lease, cfg.CallTimeout = c.Keyrelay.Worker.ClaimLease, c.Keyrelay.Worker.CallTimeout
			if !cfg.DryRun {
				cfg.Progress = progressReporter(cmd.ErrOrStderr())
			}
			var rep *recovery.RestoreReport
			opts := map[string]string{}
			for _, o := range options {
				k, v, ok := strings.Cut(o, "=")
				if !ok || k == "" {
					return fmt.Errorf("--option %q: want key=value", o)
				}
				opts[k] = v
			}
			if until != "" || since != "" || fromSeq > 0 {
				pc := recovery.PointInTimeConfig{Config: cfg.Config, FromSeq: fromSeq, To: to, Options: opts, DryRun: cfg.DryRun, Adopt: cfg.Adopt, Progress: cfg.Progress}
				if pc.Until, err = parseMoment("--until", until); err != nil {
					return err
				}
				if pc.Since, err = parseMoment("--since", since); err != nil {
					return err
				}
				prep, err := recovery.PointInTime(ctx, d, env.js, pc)
				if err != nil {
					return err
				}
				return printPointInTime(newTermSafe(cmd.OutOrStdout()), prep, asJSON, cfg.DryRun)
			}
			if to != "" && cfg.Resume != "" {
				return errors.New("--resume continues a restore from the ledger; a copy (--to) run again skips what is done by itself")
			}
			if to == "" && !cfg.DryRun {
				rkv, err := env.js.KeyValue(ctx, worker.RecoveryBucket)
				if err != nil {
					return fmt.Errorf("bucket %s: %w", worker.RecoveryBucket, err)
				}
				ros, err := env.js.ObjectStore(ctx, worker.RecoveryObjects)
				if err != nil {
					return fmt.Errorf("object store %s: %w", worker.RecoveryObjects, err)
				}
				cfg.Checkpoints = &recovery.Checkpoints{KV: rkv, OS: ros, JS: env.js}
				stderr := cmd.ErrOrStderr()
				cfg.OnStart = func(id string, total, done int) {
					if done > 0 {
						fmt.Fprintf(stderr, "resuming restore %s: %d of %d keys were done\n", id, done, total)
					} else {
						fmt.Fprintf(stderr, "restore %s: %d keys to fix (if it stops, continue with: keyrelay restore --resume %s)\n", id, total, id)
					}
				}
			}
			if to != "" {
				rep, err = recovery.Copy(ctx, d, recovery.CopyConfig{Config: cfg.Config, To: to, Options: opts, DryRun: cfg.DryRun,
					Adopt: cfg.Adopt, Progress: cfg.Progress})
			} else {
				rep, err = recovery.Restore(ctx, d, cfg)
			}
			if err != nil {
				return err
			}
			out := newTermSafe(cmd.OutOrStdout())
			if asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				printRestore(out, rep, cfg.DryRun)
			}
			if rep.Failed > 0 {
				return partialFailure("restore: %d keys failed", rep.Failed)
			}
			return ledgerSkippedFailure("restore", len(rep.LedgerSkipped))
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cfg.Teams, "team", nil, "team id (repeatable)")
	f.BoolVar(&cfg.All, "all", false, "every team in the ledger")
	f.StringVar(&cfg.Backend, "backend", "", "only keys the ledger places on this backend")
	f.BoolVar(&cfg.DryRun, "dry-run", false, "print the plan (the drift rows it would fix) and write nothing")
	f.BoolVar(&cfg.Adopt, "adopt", false, "also overwrite unowned secrets under keys' names")
	f.IntVar(&cfg.Concurrency, "concurrency", 8, "keys restored at once")
	f.Float64Var(&cfg.Rate, "rate", 0, "reads and writes per second per backend, on top of the providers' own quota limits (0: only theirs)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&cfg.Strict, "strict", false, "fail (exit 1) before restoring anything when a ledger entry in scope cannot be used (without it: reported, the others restored, exit 1)")
	f.StringVar(&to, "to", "", "copy the keys in scope into this other backend instead (a rehearsal or a move; the ledger is not changed)")
	f.StringArrayVar(&options, "option", nil, "with --to: a provider option of the target, key=value (repeatable)")
	f.StringVar(&cfg.Resume, "resume", "", "continue an unfinished restore from its checkpoint in JetStream: its run id, or without a value the latest with the same scope")
	f.Lookup("resume").NoOptDefVal = "latest"
	f.StringVar(&until, "until", "", "rebuild the state as of this moment from the events stream into --to (RFC 3339, or a duration ago: 90m)")
	f.StringVar(&since, "since", "", "with --until: replay only the events stored since this moment (the changes since a backup)")
	f.Uint64Var(&fromSeq, "from-seq", 0, "with --until: replay from this events-stream sequence")
	return cmd
}

func printRestore(w io.Writer, rep *recovery.RestoreReport, dry bool) {
	if len(rep.Rows) == 0 {
		fmt.Fprintln(w, "nothing to restore")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tWAS\tTEAM\tKEY\tBACKEND\tSECRET\tGENERATION\tWHY")
	for _, r := range rep.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Action, r.Status, r.Team, r.Key, r.Backend, r.SecretRef, r.Generation, r.Why)
	}
	_ = tw.Flush()
	if dry {
		fmt.Fprintf(w, "\ndry run: %d keys would be restored\n", len(rep.Rows))
		return
	}
	fmt.Fprintf(w, "\nwritten %d, deleted %d, skipped %d, failed %d\n", rep.Written, rep.Deleted, rep.Skipped, rep.Failed)
}

// progressReporter shows a restore's progress on w: a progress bar with
// counts, rate and ETA when w is a terminal, one JSON line a second (and
// the last) otherwise.
func progressReporter(w io.Writer) func(recovery.Progress) {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var bar *progressbar.ProgressBar
		return func(p recovery.Progress) {
			if bar == nil {
				bar = progressbar.NewOptions(p.Total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("restoring"),
					progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("keys"),
					progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
			}
			_ = bar.Set(p.Done)
			bar.Describe(fmt.Sprintf("restoring (written %d, deleted %d, skipped %d, failed %d)", p.Written, p.Deleted, p.Skipped, p.Failed))
		}
	}
	enc := json.NewEncoder(w)
	var last time.Time
	return func(p recovery.Progress) {
		if p.Done != p.Total && time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		rate := float64(p.Done) / max(p.Elapsed.Seconds(), 0.001)
		eta := 0.0
		if rate > 0 {
			eta = float64(p.Total-p.Done) / rate
		}
		_ = enc.Encode(map[string]any{"progress": "restore", "done": p.Done, "total": p.Total, "written": p.Written, "deleted": p.Deleted,
			"skipped": p.Skipped, "failed": p.Failed, "keys_per_second": rate, "eta_seconds": eta})
	}
}

// parseMoment reads an RFC 3339 time or a duration ago ("" is zero).
func parseMoment(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-12-04T15:00:00Z) or a duration ago (90m)", flag, v)
}

func printPointInTime(w io.Writer, rep *recovery.PointInTimeReport, asJSON, dry bool) error {
	if asJSON {
		if err := printJSON(w, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "replayed events-stream sequences %d..%d (%s .. %s): %d events, %d invalid messages skipped\n",
			rep.FirstSeq, rep.LastSeq, rep.FirstTime.Format(time.RFC3339), rep.LastTime.Format(time.RFC3339), rep.Events, rep.Invalid)
		for _, warn := range rep.Warnings {
			fmt.Fprintln(w, "WARNING:", warn)
		}
		printRows(w, rep.Rows)
		fmt.Fprintf(w, "\nwritten %d, deleted %d, skipped %d, failed %d", rep.Written, rep.Deleted, rep.Skipped, rep.Failed)
		if dry {
			fmt.Fprint(w, " (dry run: nothing written)")
		}
		if rep.Incomplete {
			fmt.Fprint(w, "; INCOMPLETE: see the warnings")
		}
		fmt.Fprintln(w)
	}
	switch {
	case rep.Failed > 0:
		return partialFailure("restore: %d keys failed", rep.Failed)
	case rep.Incomplete:
		// The keys whose events the retention dropped are not as of T in
		// the target: a script must not take this for a full rebuild.
		return partialFailure("restore: incomplete: the events stream no longer holds every event needed (see the warnings)")
	}
	return nil
}
