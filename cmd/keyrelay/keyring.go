package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/worker"
)

func keyringCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keyring", Short: "Manage the AES-256 sealing keyring"}
	var kid string
	gen := &cobra.Command{
		Use:   "generate FILE",
		Short: "Create a keyring file with one fresh key (mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := events.GenerateKeyringFile(args[0], kid); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s with active key %s\n", args[0], kid)
			return nil
		},
	}
	gen.Flags().StringVar(&kid, "kid", "k1", "key id")
	var activate bool
	add := &cobra.Command{
		Use:   "add-key FILE KID",
		Short: "Add a fresh key; with --activate new events are sealed with it (old keys still open history)",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			path, kid := args[0], args[1]
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var f events.KeyringFile
			if err := json.Unmarshal(b, &f); err != nil {
				return fmt.Errorf("%s: malformed keyring", path)
			}
			if len(f.Keys) == 0 {
				return fmt.Errorf("%s: malformed keyring: it has no keys (create one with keyrelay keyring generate)", path)
			}
			if err := events.ValidateID("kid", kid); err != nil {
				return err
			}
			if _, ok := f.Keys[kid]; ok {
				return fmt.Errorf("key %q already exists", kid)
			}
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			f.Keys[kid] = base64.StdEncoding.EncodeToString(k)
			if activate {
				f.Active = kid
			}
			out, _ := json.MarshalIndent(f, "", "  ")
			tmp := path + ".tmp"
			// WriteFile keeps the mode of a file that exists: start afresh,
			// so the keyring is 0600 whatever was left at tmp.
			if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
				return err
			}
			if _, err := events.LoadKeyring(tmp); err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added key %s (active: %s); restart keyrelay processes and publishers to use it (the keyring is read at start)\n", kid, f.Active)
			return nil
		},
	}
	add.Flags().BoolVar(&activate, "activate", false, "make the new key the active one")
	cmd.AddCommand(gen, add, rewrapCmd(g))
	return cmd
}

// rewrapCmd is `keyrelay keyring rewrap`: the data key of every sealed
// value the ledger holds is wrapped again under the newest key-encryption
// key of the configured sealing wrapper (seal.RewrapStore), resumable from
// a cursor file, with a progress bar on stderr.
func rewrapCmd(g *globals) *cobra.Command {
	var cursorFile string
	var reseal, restart bool
	var skip []string
	cmd := &cobra.Command{
		Use:   "rewrap",
		Short: "Re-wrap the data keys of the ledger's sealed values under the newest key-encryption key (resumable)",
		Long: `Re-wrap the data keys of the sealed values held in the ledger under the newest
version of the key-encryption key that keyrelay.sealing.<wrapper>.key_name (or
kms.key_id) names: run it after rotating the Vault Transit key, the Azure key,
the Cloud KMS CryptoKey, or moving kms.key_id to a new key, so the older
versions can be retired once the events stream no longer holds values wrapped
by them. Values keep their ciphertext (a new version of the same key) or are
sealed again under the same binding (a new AWS KMS key); --reseal moves values
of other algorithms (the local keyring's A256GCM) too.

Keys are handled in order, and the last one done is saved to --cursor after
each key, with the entries passed by --skip so far: an interrupted run
continues where it stopped when run again (--restart starts over), and still
counts the entries an earlier part skipped. Workers may run meanwhile: an entry they change is
read again.

An entry whose value cannot be opened (or written back) stops the run at
it, with the cursor before it: fix the cause (a KMS outage, a disabled key
version) and run again. An entry that will never open (corrupt, or wrapped
by a key version already destroyed) is passed with --skip KEY (its ledger
key, <team>.<key>, as the error names it): it is left as it is and listed.

Exit status: 0 when every value after the cursor is under the newest key
(or of another algorithm, left alone), 1 otherwise: the run stopped, or it
finished but left values under older key versions: entries named by --skip,
and ledger entries that cannot be used (printed on stderr). Do not retire
an older key version after a run that exited 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, log, err := g.load()
			if err != nil {
				return err
			}
			sealing, err := app.LoadSealing(ctx, c, false, log)
			if err != nil {
				return err
			}
			s, ok := sealing.Sealer.(*seal.Sealer)
			if !ok {
				return errors.New("rewrap: no key wrapper seals new values: set the sealing key of one of keyrelay.sealing.kms, gcp_kms, vault_transit or azure_keys")
			}
			conn, err := app.Connect(c, "keyrelay-rewrap", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			kv, err := conn.JS.KeyValue(ctx, worker.LedgerBucket)
			if err != nil {
				return fmt.Errorf("ledger: %w", err)
			}
			// earlier: keys an interrupted run passed over with --skip,
			// before its cursor. A resumed run does not see them again, so
			// it carries them: it still lists them and exits 1.
			after, earlier := "", []string(nil)
			if !restart {
				if after, earlier, err = readCursor(cursorFile); err != nil {
					return fmt.Errorf("cursor: %w", err)
				}
			}
			opts := seal.RewrapOptions{After: after, Skip: skip}
			if reseal {
				opts.Reseal = sealing.Opener
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			var bar *progressbar.ProgressBar
			opts.Progress = func(r seal.RewrapResult) {
				if bar == nil {
					bar = progressbar.NewOptions(r.Total, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("rewrapping"),
						progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("keys"),
						progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
				}
				_ = bar.Set(r.Done)
				_ = writeCursor(cursorFile, r.Cursor, append(slices.Clip(earlier), r.Skipped...))
			}
			if after != "" {
				fmt.Fprintf(stderr, "resuming after %s (cursor %s; --restart starts over)\n", after, cursorFile)
			}
			unusable, printUnusable := 0, printSkipped(stderr)
			st := &ledgerStore{l: worker.NewLedger(kv, conn.NC), skipped: func(se worker.SkippedEntry) { unusable++; printUnusable(se) }}
			res, err := seal.RewrapStore(ctx, s, st, opts)
			if bar != nil {
				_ = bar.Finish()
			}
			res.Skipped = append(slices.Clip(earlier), res.Skipped...)
			fmt.Fprintf(stdout, "rewrapped %d, no value %d, other algorithm %d, skipped %d (of %d keys after the cursor) under %s %s\n",
				res.Rewrapped, res.Empty, res.Other, len(res.Skipped), res.Total, s.Wrapper().Name(), s.KeyID())
			for _, k := range res.Skipped {
				fmt.Fprintf(stderr, "skipped %s (--skip): its value is still wrapped by an older key version\n", k)
			}
			if err != nil {
				var re *seal.RewrapError
				if errors.As(err, &re) {
					return fmt.Errorf("%w (cursor %s: run again to resume once the cause is fixed; if this entry will never open, "+
						"pass --skip %s to leave it as it is)", err, cursorFile, re.Key)
				}
				return fmt.Errorf("%w (cursor %s: run again to resume)", err, cursorFile)
			}
			if res.Done == res.Total {
				_ = os.Remove(cursorFile)
			}
			if n := len(res.Skipped) + unusable; n > 0 {
				// Their values are still under older key versions: a script
				// must not go on to retire those.
				return partialFailure("rewrap: %d entries were not rewrapped (%d named by --skip, %d unusable ledger entries): "+
					"do not retire the older key versions", n, len(res.Skipped), unusable)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cursorFile, "cursor", "keyrelay-rewrap.cursor", "file holding the last key done, to resume an interrupted run")
	cmd.Flags().BoolVar(&reseal, "reseal", false, "also seal values of other algorithms (the local keyring's, another wrapper's) again with the sealing wrapper")
	cmd.Flags().BoolVar(&restart, "restart", false, "ignore the cursor file and start from the first key")
	cmd.Flags().StringArrayVar(&skip, "skip", nil, "leave this entry (ledger key <team>.<key>) as it is: one that will never open and otherwise stops every run (repeatable; the command then exits 1)")
	return cmd
}

// The cursor file: the last key done on its first line, then a line
// "skipped <key>" for each key passed over with --skip before it (a file
// of one line, as written before those lines existed, has none).
const cursorSkipped = "skipped "

func writeCursor(path, cursor string, skipped []string) error {
	var b strings.Builder
	b.WriteString(cursor + "\n")
	for _, k := range skipped {
		b.WriteString(cursorSkipped + k + "\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readCursor reads what writeCursor wrote; no file is no cursor.
func readCursor(path string) (cursor string, skipped []string, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	cursor = strings.TrimSpace(lines[0])
	for i, l := range lines[1:] {
		k, ok := strings.CutPrefix(strings.TrimSpace(l), cursorSkipped)
		if !ok || k == "" || k > cursor {
			return "", nil, fmt.Errorf("%s line %d: not %q and a key before the cursor (--restart starts over)", path, i+2, cursorSkipped)
		}
		skipped = append(skipped, k)
	}
	return cursor, skipped, nil
}

// ledgerStore is the ledger as a seal.Store: the entries' sealed values,
// bound to (team, key, sealed_generation), replaced by compare-and-set.
type ledgerStore struct {
	l *worker.Ledger
	// skipped is told of entries that cannot be used (not rewrapped);
	// nil: Keys fails naming them, after listing the others.
	skipped func(worker.SkippedEntry)
	mu      sync.Mutex
	entries map[string]*worker.LedgerEntry
}

func (ls *ledgerStore) Keys(ctx context.Context) ([]string, error) {
	var keys []string
	err := ls.l.AllWith(ctx, worker.AllOptions{Skipped: ls.skipped}, func(k string, _ *worker.LedgerEntry, _ uint64) error {
		keys = append(keys, k)
		return nil
	})
	return keys, err
}

func (ls *ledgerStore) Get(ctx context.Context, k string) (*events.SealedValue, events.Binding, uint64, error) {
	team, key, err := worker.ParseLedgerKey(k)
	if err != nil {
		return nil, events.Binding{}, 0, err
	}
	e, rev, err := ls.l.Get(ctx, team, key)
	if err != nil || e == nil {
		return nil, events.Binding{}, 0, err
	}
	ls.mu.Lock()
	if ls.entries == nil {
		ls.entries = map[string]*worker.LedgerEntry{}
	}
	ls.entries[k] = e
	ls.mu.Unlock()
	return e.Sealed, events.Binding{TeamID: team, KeyID: key, Generation: e.SealedGen}, rev, nil
}

func (ls *ledgerStore) Put(ctx context.Context, k string, sv *events.SealedValue, rev uint64) error {
	team, key, err := worker.ParseLedgerKey(k)
	if err != nil {
		return err
	}
	ls.mu.Lock()
	e := ls.entries[k]
	delete(ls.entries, k)
	ls.mu.Unlock()
	if e == nil {
		return seal.ErrConflict
	}
	e.Sealed = sv
	_, err = ls.l.Put(ctx, team, key, e, rev)
	if errors.Is(err, worker.ErrLedgerConflict) {
		return seal.ErrConflict
	}
	return err
}
