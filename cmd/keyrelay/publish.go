package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/tracing"
)

type publishFlags struct {
	team, key, alias, prevAlias string
	value, valueFile, valueEnv  string
	generation                  uint64
	metadata                    []string
	grace                       time.Duration
	// settings
	backend, prefix, accessMode, template, description string
	store                                              string
	options, tags                                      []string
}

func publishCmd(g *globals) *cobra.Command {
	f := &publishFlags{}
	cmd := &cobra.Command{Use: "publish", Short: "Publish key and team-settings events (as a gateway would)"}
	keyFlags := func(c *cobra.Command, withValue bool) {
		c.Flags().StringVar(&f.team, "team", "", "team id (required)")
		c.Flags().StringVar(&f.key, "key", "", "key id, stable across renames (required)")
		c.Flags().StringVar(&f.alias, "alias", "", "key alias")
		c.Flags().Uint64Var(&f.generation, "generation", 0, "per-key generation (default: now in microseconds)")
		_ = c.MarkFlagRequired("team")
		_ = c.MarkFlagRequired("key")
		if withValue {
			c.Flags().StringVar(&f.valueFile, "value-file", "", "read the value from this file")
			c.Flags().StringVar(&f.valueEnv, "value-env", "", "read the value from this environment variable")
			c.Flags().StringVar(&f.value, "value", "", "the value (visible in shell history; prefer --value-file or --value-env; default: a fresh sk- key)")
			c.Flags().StringSliceVar(&f.metadata, "meta", nil, "metadata k=v (repeatable)")
		}
	}
	run := func(typ events.Type) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error { return publishKey(cmd, g, f, typ) }
	}
	create := &cobra.Command{Use: "create", Short: "key.created: store a new key", RunE: run(events.KeyCreated)}
	keyFlags(create, true)
	rotate := &cobra.Command{Use: "rotate", Short: "key.rotated: store a new value, keep the old one for a grace period", RunE: run(events.KeyRotated)}
	keyFlags(rotate, true)
	rotate.Flags().DurationVar(&f.grace, "grace", 0, "grace period for the previous value")
	rename := &cobra.Command{Use: "rename", Short: "key.updated: rename the alias or change metadata", RunE: run(events.KeyUpdated)}
	keyFlags(rename, false)
	rename.Flags().StringVar(&f.prevAlias, "previous-alias", "", "the alias before the rename")
	rename.Flags().StringSliceVar(&f.metadata, "meta", nil, "metadata k=v (repeatable)")
	del := &cobra.Command{Use: "delete", Short: "key.deleted: delete the key's secret", RunE: run(events.KeyDeleted)}
	keyFlags(del, false)

	st := &cobra.Command{Use: "settings", Short: "team.settings.updated: set a team's secret-manager settings",
		RunE: func(cmd *cobra.Command, _ []string) error { return publishSettings(cmd, g, f, false) }}
	st.Flags().StringVar(&f.team, "team", "", "team id (required)")
	_ = st.MarkFlagRequired("team")
	st.Flags().Uint64Var(&f.generation, "generation", 0, "per-team generation (default: now in microseconds)")
	st.Flags().StringVar(&f.backend, "backend", "", "key_management_system for this team")
	st.Flags().StringVar(&f.prefix, "prefix", "", "prefix for stored virtual keys")
	st.Flags().StringVar(&f.accessMode, "access-mode", "", "read_only, write_only or read_and_write")
	st.Flags().StringVar(&f.store, "store-virtual-keys", "", "true or false")
	st.Flags().StringVar(&f.template, "name-template", "", "secret name template")
	st.Flags().StringVar(&f.description, "description", "", "description written with each secret")
	st.Flags().StringSliceVar(&f.options, "option", nil, "provider option k=v (repeatable)")
	st.Flags().StringSliceVar(&f.tags, "tag", nil, "tag k=v (repeatable)")
	sd := &cobra.Command{Use: "settings-delete", Short: "team.settings.deleted: drop a team's overrides",
		RunE: func(cmd *cobra.Command, _ []string) error { return publishSettings(cmd, g, f, true) }}
	sd.Flags().StringVar(&f.team, "team", "", "team id (required)")
	_ = sd.MarkFlagRequired("team")
	sd.Flags().Uint64Var(&f.generation, "generation", 0, "per-team generation (default: now in microseconds)")

	cmd.AddCommand(create, rotate, rename, del, st, sd)
	return cmd
}

func kv(list []string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(list))
	for _, s := range list {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not k=v", s)
		}
		m[k] = v
	}
	return m, nil
}

func (f *publishFlags) readValue() ([]byte, bool, error) {
	switch {
	case f.valueFile != "":
		b, err := os.ReadFile(f.valueFile)
		return []byte(strings.TrimRight(string(b), "\r\n")), false, err
	case f.valueEnv != "":
		v, ok := os.LookupEnv(f.valueEnv)
		if !ok {
			return nil, false, fmt.Errorf("environment variable %s is not set", f.valueEnv)
		}
		return []byte(v), false, nil
	case f.value != "":
		return []byte(f.value), false, nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return nil, false, err
	}
	return []byte("sk-" + base64.RawURLEncoding.EncodeToString(b)), true, nil
}

func publishKey(cmd *cobra.Command, g *globals, f *publishFlags, typ events.Type) error {
	c, log, err := g.load()
	if err != nil {
		return err
	}
	gen := f.generation
	if gen == 0 {
		gen = uint64(time.Now().UnixMicro())
	}
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: uuid.NewString(), Type: typ, Time: time.Now().UTC(),
		TeamID: f.team, KeyID: f.key, Generation: gen, KeyAlias: f.alias}
	meta, err := kv(f.metadata)
	if err != nil {
		return err
	}
	generated := false
	switch typ {
	case events.KeyCreated, events.KeyRotated:
		sealing, err := app.LoadSealing(cmd.Context(), c, false, log)
		if err != nil {
			return fmt.Errorf("%w (start `keyrelay serve` once to create the embedded keyring, or pass --keyring)", err)
		}
		value, gen, err := f.readValue()
		if err != nil {
			return err
		}
		generated = gen
		sv, err := sealing.Sealer.Seal(cmd.Context(), value, events.BindingOf(ev))
		if err != nil {
			return err
		}
		ev.Data, _ = json.Marshal(events.KeyData{Value: sv, Metadata: meta, GracePeriodSeconds: int64(f.grace.Seconds())})
		if generated {
			fmt.Fprintf(os.Stdout, "value: %s\n", value)
		}
		clear(value)
	case events.KeyUpdated:
		ev.Data, _ = json.Marshal(events.UpdateData{PreviousAlias: f.prevAlias, Metadata: meta})
	}
	return publish(cmd, c, log, ev)
}

func publishSettings(cmd *cobra.Command, g *globals, f *publishFlags, del bool) error {
	c, log, err := g.load()
	if err != nil {
		return err
	}
	gen := f.generation
	if gen == 0 {
		gen = uint64(time.Now().UnixMicro())
	}
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: uuid.NewString(), Type: events.TeamSettingsUpdated,
		Time: time.Now().UTC(), TeamID: f.team, Generation: gen}
	if del {
		ev.Type = events.TeamSettingsDeleted
	} else {
		ts := events.TeamSettings{Backend: f.backend, AccessMode: f.accessMode, NameTemplate: f.template, Description: f.description}
		if cmd.Flags().Changed("prefix") {
			ts.Prefix = &f.prefix
		}
		switch f.store {
		case "":
		case "true", "false":
			b := f.store == "true"
			ts.StoreVirtualKeys = &b
		default:
			return errors.New("--store-virtual-keys must be true or false")
		}
		if ts.Options, err = kv(f.options); err != nil {
			return err
		}
		if ts.Tags, err = kv(f.tags); err != nil {
			return err
		}
		ev.Data, _ = json.Marshal(events.SettingsData{Settings: ts})
	}
	return publish(cmd, c, log, ev)
}

func publish(cmd *cobra.Command, c *appConfig, log *appLogger, ev *events.Event) error {
	conn, err := app.Connect(c, "keyrelay-publish", false, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	// The command's span: the event's trace starts here (its id is shown
	// when the span is sampled).
	ctx, span := tracing.Tracer(nil).Start(cmd.Context(), "keyrelay.cli.publish")
	defer span.End()
	seq, err := client.NewPublisher(conn.JS).Publish(ctx, ev)
	if err != nil {
		return err
	}
	trace := ""
	if sc := span.SpanContext(); sc.IsSampled() {
		trace = " trace_id=" + sc.TraceID().String()
	}
	fmt.Fprintf(os.Stdout, "published %s id=%s team=%s key=%s generation=%d stream_seq=%d%s\n",
		ev.Type, ev.ID, ev.TeamID, ev.KeyID, ev.Generation, seq, trace)
	return nil
}
