package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	gsm "github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// Backend health, as /readyz reports it.
//
// Every configured backend (the global key_management_system and each
// backend a team's settings choose) is probed every BackendHealthInterval
// with a cheap read through its provider: a Get of BackendProbeName, a
// secret that does not exist. Not found (or found) means reachable;
// access denied means reachable with reads refused (a write_only set-up);
// a retryable error (network, timeout, 5xx, throttling) means down; a
// provider that cannot be built from its settings is misconfigured.
//
// /readyz answers 503 while the global backend is down or misconfigured
// (this process could store nothing for teams without settings of their
// own), and 200 otherwise, listing every backend with its state: a team's
// broken backend is reported but does not take the process out of
// service for every other team.
const (
	// BackendHealthInterval is how often each backend is probed; /readyz
	// answers from the latest results.
	BackendHealthInterval = 5 * time.Second
	// BackendProbeTimeout bounds one probe.
	BackendProbeTimeout = 3 * time.Second
	// BackendProbeName is the secret name the probe reads.
	BackendProbeName = "keyrelay-readiness-probe"
)

// Backend states.
const (
	BackendOK            = "ok"
	BackendDown          = "down"
	BackendMisconfigured = "misconfigured"
	BackendUnchecked     = "not checked yet"
)

// ErrUnknownBackend is returned when key_management_system names a backend
// this build does not have.
var ErrUnknownBackend = errors.New("unknown backend")

// CheckBackend refuses a key_management_system that the registry does
// not know, naming the setting and the known backends.
func CheckBackend(c *settings.Config, registry *providers.Registry) error {
	name := c.KeyManagementSystem
	for _, n := range registry.Names() {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("general_settings.key_management_system: %w %q; known backends: %s", ErrUnknownBackend, name,
		strings.Join(registry.Names(), ", "))
}

// backendSetting is a provider setting that LiteLLM reads from an
// environment variable and keyrelay also takes as a provider option.
type backendSetting struct {
	option, env string
	// def is the value used when neither is set ("" when required).
	def string
}

// backendSettings are the settings a backend cannot work without (or
// silently defaults), by key_management_system name.
var backendSettings = map[string][]backendSetting{
	vault.Name:    {{option: vault.OptionAddr, env: vault.EnvAddr, def: vault.DefaultAddr}},
	keyvault.Name: {{option: keyvault.OptionVaultURL, env: keyvault.EnvVaultURI}},
	conjur.Name:   {{option: conjur.OptionAPIBase, env: conjur.EnvAPIBase}},
	gsm.Name:      {{option: gsm.OptionProject, env: gsm.EnvProject}},
}

// MissingSettings lists, for backend with provider options opts, the
// settings that are set neither as an option nor in the environment:
// problems (required, the backend cannot work) and notes (a default
// applies, which is rarely what production wants).
func MissingSettings(backend string, opts map[string]string, getenv func(string) string) (problems, notes []string) {
	for _, s := range backendSettings[backend] {
		if strings.TrimSpace(opts[s.option]) != "" || strings.TrimSpace(getenv(s.env)) != "" {
			continue
		}
		if s.def == "" {
			problems = append(problems, fmt.Sprintf("%s is not set (nor keyrelay.providers.%s.%s)", s.env, backend, s.option))
		} else {
			notes = append(notes, fmt.Sprintf("%s is not set (nor keyrelay.providers.%s.%s): using %s", s.env, backend, s.option, s.def))
		}
	}
	return problems, notes
}

// backendState is one configured backend's latest health.
type backendState struct {
	backend string
	// global is true for the global backend; teams lists the teams whose
	// settings choose this backend (and options).
	global bool
	teams  []string
	status string
	reason string
}

// backendTarget is one backend to probe: a name and its options.
type backendTarget struct {
	key     string
	backend string
	opts    map[string]string
	global  bool
	teams   []string
}

// backendHealth probes the configured backends and keeps their states.
type backendHealth struct {
	c        *settings.Config
	registry *providers.Registry
	log      *zap.Logger

	mu     sync.Mutex
	states []backendState
	teams  *worker.Teams // nil until watchTeams has loaded them
	logged map[string]bool
	// down: the team backends last probed down, whose teams were logged.
	down map[string]bool
}

func newBackendHealth(c *settings.Config, registry *providers.Registry, log *zap.Logger) *backendHealth {
	return &backendHealth{c: c, registry: registry, log: log, logged: map[string]bool{}, down: map[string]bool{},
		states: []backendState{{backend: c.KeyManagementSystem, global: true, status: BackendUnchecked}}}
}

// announce logs, at error level, what is missing for the global backend.
func (h *backendHealth) announce() {
	r := h.c.Resolve(nil)
	problems, notes := MissingSettings(r.Backend, r.Options, h.c.Env)
	for _, p := range problems {
		h.log.Error("backend misconfigured: it cannot work until this is set", zap.String("backend", r.Backend), zap.String("problem", p))
	}
	for _, n := range notes {
		h.log.Error("backend setting not set: a default applies", zap.String("backend", r.Backend), zap.String("problem", n))
	}
	h.logged[h.targetKey(r.Backend, r.Options)] = true
}

// run probes every BackendHealthInterval until ctx ends.
func (h *backendHealth) run(ctx context.Context) {
	for {
		h.probeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(BackendHealthInterval):
		}
	}
}

// watchTeams follows the team settings bucket (with the workers' own
// watch, worker.Teams) so that the backends teams choose are probed too. It
// returns once the current settings are loaded.
func (h *backendHealth) watchTeams(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, worker.TeamsBucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", worker.TeamsBucket, err)
	}
	t := worker.NewTeams(kv, nil, h.log)
	if err := t.Start(ctx); err != nil {
		return err
	}
	h.mu.Lock()
	h.teams = t
	h.mu.Unlock()
	return nil
}

func (h *backendHealth) targetKey(backend string, opts map[string]string) string {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(backend)
	for _, k := range keys {
		fmt.Fprintf(&b, "\x00%s\x00%s", k, opts[k])
	}
	return b.String()
}

// targets lists the distinct backends to probe: the global one first,
// then those of the teams, each with the teams using it.
func (h *backendHealth) targets() []*backendTarget {
	h.mu.Lock()
	src := h.teams
	h.mu.Unlock()
	var teams map[string]*events.TeamSettings
	if src != nil {
		teams = src.All()
	}
	g := h.c.Resolve(nil)
	out := []*backendTarget{{key: h.targetKey(g.Backend, g.Options), backend: g.Backend, opts: g.Options, global: true}}
	byKey := map[string]*backendTarget{out[0].key: out[0]}
	names := make([]string, 0, len(teams))
	for t := range teams {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, team := range names {
		r := h.c.Resolve(teams[team])
		opts, _ := r.ProviderOptions(func(key string) bool { return h.registry.TeamOptionAllowed(r.Backend, key) })
		k := h.targetKey(r.Backend, opts)
		t, ok := byKey[k]
		if !ok {
			t = &backendTarget{key: k, backend: r.Backend, opts: opts}
			byKey[k] = t
			out = append(out, t)
		}
		t.teams = append(t.teams, team)
	}
	return out
}

// probeAll probes every target at once and stores the results.
func (h *backendHealth) probeAll(ctx context.Context) {
	targets := h.targets()
	states := make([]backendState, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, reason := h.probe(ctx, t)
			states[i] = backendState{backend: t.backend, global: t.global, teams: t.teams, status: status, reason: reason}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, t := range targets {
		if states[i].status == BackendMisconfigured && !h.logged[t.key] {
			h.logged[t.key] = true
			h.log.Error("backend misconfigured", zap.String("backend", t.backend), zap.Bool("global", t.global),
				zap.Strings("teams", clipList(t.teams, 10)), zap.String("problem", states[i].reason))
		}
		// /readyz counts a backend's teams without naming them: the log
		// names the teams of a backend that went down.
		if down := states[i].status == BackendDown; down != h.down[t.key] && len(t.teams) > 0 {
			h.down[t.key] = down
			if down {
				h.log.Warn("backend down", zap.String("backend", t.backend), zap.Bool("global", t.global),
					zap.Strings("teams", clipList(t.teams, 10)), zap.String("problem", states[i].reason))
			}
		}
	}
	h.states = states
}

// probe reads BackendProbeName through the provider.
func (h *backendHealth) probe(ctx context.Context, t *backendTarget) (status, reason string) {
	problems, notes := MissingSettings(t.backend, t.opts, h.c.Env)
	if len(problems) > 0 {
		return BackendMisconfigured, strings.Join(problems, "; ")
	}
	pctx, cancel := context.WithTimeout(ctx, BackendProbeTimeout)
	defer cancel()
	p, err := h.registry.Open(pctx, t.backend, providers.Config{Options: t.opts, Getenv: h.c.Env, Logger: h.log.Named("health")})
	if err != nil {
		if errors.Is(err, providers.ErrUnknownProvider) {
			return BackendMisconfigured, fmt.Sprintf("%s is not a known backend; known backends: %s", t.backend, strings.Join(h.registry.Names(), ", "))
		}
		if providers.IsRetryable(err) {
			return BackendDown, err.Error()
		}
		return BackendMisconfigured, err.Error()
	}
	_, err = p.Get(pctx, BackendProbeName, "")
	note := strings.Join(notes, "; ")
	switch {
	case err == nil, errors.Is(err, providers.ErrNotFound):
		return BackendOK, note
	case errors.Is(err, providers.ErrAccessDenied):
		return BackendOK, strings.TrimPrefix(note+"; reachable, reads denied", "; ")
	case providers.IsRetryable(err):
		return BackendDown, err.Error()
	default:
		return BackendDown, "probe failed: " + err.Error()
	}
}

// report returns whether the global backend is ok, the reason when not,
// and one line per backend.
func (h *backendHealth) report() (bool, string, []string) {
	h.mu.Lock()
	states := h.states
	h.mu.Unlock()
	ok, why := true, ""
	lines := make([]string, 0, len(states))
	for _, s := range states {
		// Teams are counted, not named: /readyz answers without
		// credentials (probes), and a team id says who the gateway's
		// customers are. The log names them (probeAll).
		who := "global"
		if n := len(s.teams); n > 0 {
			who = fmt.Sprintf("%d teams", n)
			if n == 1 {
				who = "1 team"
			}
			if s.global {
				who = "global, " + who
			}
		}
		line := fmt.Sprintf("backend %s (%s): %s", s.backend, who, s.status)
		if s.reason != "" {
			line += ": " + s.reason
		}
		lines = append(lines, line)
		if s.global && s.status != BackendOK && ok {
			ok, why = false, line
		}
	}
	return ok, why, lines
}

func clipList(l []string, n int) []string {
	if len(l) <= n {
		return l
	}
	return append(append([]string(nil), l[:n]...), fmt.Sprintf("and %d more", len(l)-n))
}
