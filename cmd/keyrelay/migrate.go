package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

func migrateCmd(g *globals) *cobra.Command {
	var cfg recovery.MigrateConfig
	var asJSON, setBackend, cleanup bool
	cmd := &cobra.Command{
		Use:   "migrate --team T --to BACKEND",
		Short: "Move a team's keys to the backend its settings now name; delete the old copies after a grace period",
		Long: `migrate moves every live key of a team to the backend its settings name:
the ledger's newest value is written there (idempotent by the ledger's event
id), read back and compared by digest, and the ledger (and so the lookups)
then points at the new secret. Each key is claimed like a worker claims it,
so a rotation published meanwhile waits and then lands in the new backend.

The team's settings must name the target first, or the next rotation would
write the key back to the old backend: publish the settings change (keyrelay
publish settings --team T --backend B), or pass --set-backend and migrate
publishes it (the team's other settings kept) and waits until it is applied.

The copies on the old backend stay for keyrelay.migration.grace (default
24h, --grace to change), for rollback; then keyrelay serve deletes them
(their ownership checked again). --delete-source deletes them as soon as
every key is verified. --cleanup deletes the copies whose grace is over now.

A second run moves nothing. Keys that fail stay where they are and in use;
run migrate again. Exit status: 0 when every key is in the target, 1 when a
key failed or a ledger entry of the team could not be used (its key was not
moved; --cleanup: its old copy not deleted).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := events.ValidateID("team_id", cfg.Team); err != nil {
				return fmt.Errorf("--team: %w", err)
			}
			if cfg.To == "" && !cleanup {
				return errors.New("name the target backend with --to")
			}
			if cleanup && cfg.DryRun {
				// Cleanup deletes; it has no dry run to honour the flag with.
				return errors.New("--cleanup deletes the old copies and has no --dry-run: nothing done (run it without --dry-run to delete them)")
			}
			env, err := openRecoveryTo(ctx, g, "keyrelay-migrate", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer env.close()
			c := env.c
			if !slices.Contains(env.d.Registry.Names(), cfg.To) && !cleanup {
				return fmt.Errorf("--to %q: not a backend this build knows (%v)", cfg.To, env.d.Registry.Names())
			}
			cfg.Lease, cfg.CallTimeout = c.Keyrelay.Worker.ClaimLease, c.Keyrelay.Worker.CallTimeout
			rkv, err := env.js.KeyValue(ctx, worker.RecoveryBucket)
			if err != nil {
				return fmt.Errorf("bucket %s: %w", worker.RecoveryBucket, err)
			}
			migrations := recovery.Migrations{KV: rkv, JS: env.js}
			out := newTermSafe(cmd.OutOrStdout())
			if cleanup {
				grace := cfg.Grace
				if !cmd.Flags().Changed("grace") {
					grace = c.Keyrelay.Migration.Grace
				}
				rep, err := recovery.Cleanup(ctx, env.d, recovery.CleanupConfig{Team: cfg.Team, Grace: grace, Force: cfg.DeleteSource,
					Concurrency: cfg.Concurrency, Rate: cfg.Rate, Lease: cfg.Lease})
				if err != nil {
					return err
				}
				if asJSON {
					// Not returned at once: a failed deletion sets the exit
					// status below, JSON or not.
					if err := printJSON(out, rep); err != nil {
						return err
					}
				} else {
					printRows(out, rep.Rows)
					fmt.Fprintf(out, "\nold copies deleted %d, pending %d, failed %d\n", rep.Deleted, rep.Pending, rep.Failed)
				}
				if rep.Done() {
					// Nothing pending ends only a finished move: a copy that
					// failed is still pending (its entry keeps it), and a
					// requested or running move has nothing pending because
					// its keys are not moved yet, which the sweeper still
					// does. Nor while an entry of the team could not be
					// read: the copies it records are known only to it. The
					// revision read guards against a sweeper rewriting the
					// record meanwhile.
					if r, rev, err := migrations.Get(ctx, cfg.Team); err == nil && r != nil && r.State == recovery.MigrationMoved {
						_ = migrations.KV.Delete(ctx, recovery.MigrationKey(cfg.Team), jetstream.LastRevision(rev))
					}
				}
				if rep.Failed > 0 {
					return partialFailure("cleanup: %d old copies not deleted", rep.Failed)
				}
				return ledgerSkippedFailure("cleanup", len(rep.LedgerSkipped))
			}
			if cur := c.Resolve(env.d.TeamSettings(cfg.Team)).Backend; cur != cfg.To {
				if !setBackend {
					return fmt.Errorf("team %q is on %q: publish the settings change first (keyrelay publish settings --team %s --backend %s) or pass --set-backend",
						cfg.Team, cur, cfg.Team, cfg.To)
				}
				if cfg.DryRun {
					fmt.Fprintf(out, "dry run: would publish team.settings.updated for %s with backend %s (from %s)\n", cfg.Team, cfg.To, cur)
				} else if err := moveSettings(ctx, env, cfg.Team, cfg.To); err != nil {
					return err
				}
			}
			if !cfg.DryRun {
				cfg.Progress = progressReporter(cmd.ErrOrStderr())
			}
			if cfg.DryRun && c.Resolve(env.d.TeamSettings(cfg.Team)).Backend != cfg.To {
				return nil // nothing more can be planned before the settings move
			}
			rep, err := recovery.Migrate(ctx, env.d, cfg)
			if err != nil {
				return err
			}
			if !cfg.DryRun && !cfg.DeleteSource && rep.Moved > 0 {
				// The sweeper of keyrelay serve deletes the old copies at DeleteAfter.
				if err := migrations.Record(ctx, &recovery.MigrationRecord{Team: cfg.Team, To: cfg.To, State: recovery.MigrationMoved,
					MovedAt: time.Now().UTC(), DeleteAfter: rep.DeleteAfter, Moved: rep.Moved, Failed: rep.Failed}); err != nil {
					return fmt.Errorf("record the migration (the keys are moved; delete the old copies with migrate --cleanup): %w", err)
				}
			}
			if asJSON {
				if err := printJSON(out, rep); err != nil {
					return err
				}
			} else {
				printRows(out, rep.Rows)
				fmt.Fprintf(out, "\nmoved %d, already there %d, skipped %d, failed %d", rep.Moved, rep.Verified, rep.Skipped, rep.Failed)
				switch {
				case cfg.DryRun:
					fmt.Fprint(out, " (dry run: nothing written)")
				case cfg.DeleteSource:
					fmt.Fprintf(out, "; old copies deleted %d", rep.SourcesDeleted)
				case !rep.DeleteAfter.IsZero():
					fmt.Fprintf(out, "; old copies deleted after %s", rep.DeleteAfter.Format(time.RFC3339))
				}
				fmt.Fprintln(out)
			}
			if rep.Failed > 0 {
				return partialFailure("migrate: %d keys failed; run migrate again", rep.Failed)
			}
			return ledgerSkippedFailure("migrate", len(rep.LedgerSkipped))
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Team, "team", "", "team id (required)")
	_ = cmd.MarkFlagRequired("team")
	f.StringVar(&cfg.To, "to", "", "target backend (a key_management_system name)")
	f.BoolVar(&setBackend, "set-backend", false, "publish the team-settings change to --to first (other settings kept) and wait until it is applied")
	f.BoolVar(&cfg.DeleteSource, "delete-source", false, "delete the old copies as soon as every key is verified in the target")
	f.DurationVar(&cfg.Grace, "grace", 0, "how long the old copies stay (default: keyrelay.migration.grace)")
	f.BoolVar(&cleanup, "cleanup", false, "only delete the old copies whose grace period is over (with --delete-source: all of them)")
	f.BoolVar(&cfg.DryRun, "dry-run", false, "list what would move and write nothing")
	f.BoolVar(&cfg.Adopt, "adopt", false, "overwrite unowned secrets under the keys' names in the target")
	f.IntVar(&cfg.Concurrency, "concurrency", 8, "keys moved at once")
	f.Float64Var(&cfg.Rate, "rate", 0, "reads and writes per second per backend, on top of the providers' own quota limits (0: only theirs)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// moveSettings publishes team's current settings with backend to, and
// waits until the team-settings bucket shows them applied.
func moveSettings(ctx context.Context, env *recoveryEnv, team, to string) error {
	st := env.teams.Cached(team)
	ts := events.TeamSettings{}
	if st.Settings != nil {
		ts = *st.Settings
	}
	ts.Backend = to
	gen := max(uint64(time.Now().UnixMicro()), st.Generation+1)
	data, err := json.Marshal(events.SettingsData{Settings: ts})
	if err != nil {
		return err
	}
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: uuid.NewString(), Type: events.TeamSettingsUpdated,
		Time: time.Now().UTC(), TeamID: team, Generation: gen, Data: data}
	if _, err := client.NewPublisher(env.js).Publish(ctx, ev); err != nil {
		return fmt.Errorf("publish the settings change: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for env.c.Resolve(env.teams.Cached(team).Settings).Backend != to {
		select {
		case <-wctx.Done():
			return fmt.Errorf("the settings change (event %s) was published but not applied within 2m: are workers running? %w", ev.ID, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func printRows(w io.Writer, rows []recovery.RestoreRow) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "no keys")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tTEAM\tKEY\tBACKEND\tSECRET\tGENERATION\tWHY")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Action, r.Team, r.Key, r.Backend, r.SecretRef, r.Generation, r.Why)
	}
	_ = tw.Flush()
}
