package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
)

// nsBackend is the name of a backend whose storage is keyed by its
// "namespace" option, which a team may set: Vault's namespace or mount,
// Google's project, AWS's region, Conjur's policy branch all work so.
const nsBackend = "ns_vault"

// namespaces are nsBackend's stores, one in-memory store per namespace
// ("": the backend's default).
type namespaces struct {
	t      *testing.T
	mu     sync.Mutex
	stores map[string]*local.Provider
}

// withNamespaces registers nsBackend in b's registry, letting teams set
// its namespace.
func withNamespaces(b *bundle) *namespaces {
	n := &namespaces{t: b.t, stores: map[string]*local.Provider{}}
	b.reg.Register(nsBackend, func(_ context.Context, cfg providers.Config) (providers.Provider, error) {
		return n.store(cfg.Options["namespace"]), nil
	})
	b.reg.AllowTeamOptions(nsBackend, "namespace")
	return n
}

func (n *namespaces) store(ns string) *local.Provider {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.stores[ns]
	if s == nil {
		var err error
		if s, err = local.New(local.Config{}); err != nil {
			n.t.Fatal(err)
		}
		n.stores[ns] = s
	}
	return s
}

// has reports whether namespace ns holds a live secret under name.
func (n *namespaces) has(ctx context.Context, ns, name string) bool {
	_, err := n.store(ns).Get(ctx, name, "")
	return err == nil
}

// steps publishes events one at a time, each once the previous one is
// confirmed, and returns the confirmations by event id.
func (b *bundle) steps(n *int, evs ...*events.Event) map[string]*events.Confirmation {
	b.t.Helper()
	var cs []*events.Confirmation
	for _, ev := range evs {
		b.publish(ev)
		*n++
		cs = b.confirmations(*n, 30*time.Second)
	}
	return byEventID(cs)
}

func nsSettings(ns string) *events.TeamSettings {
	s := &events.TeamSettings{Backend: nsBackend}
	if ns != "" {
		s.Options = map[string]string{"namespace": ns}
	}
	return s
}

// TestDeleteWhereTheSecretWasWritten: a key written while its team's
// options put it in one namespace is deleted there after the team changed
// them (another namespace; a namespace set where it had none) or moved to
// another backend. The delete used to resolve the backend with the team's
// current options, find nothing there, and confirm "deleted" for a secret
// still stored.
func TestDeleteWhereTheSecretWasWritten(t *testing.T) {
	b := setup(t, setupOptions{})
	ns := withNamespaces(b)
	b.startWorker(nil)
	n := 0
	for name, c := range map[string]struct {
		team    string
		before  *events.TeamSettings
		wroteNS string
		after   *events.TeamSettings
	}{
		"namespace changed":     {"team-a", nsSettings("ns-a"), "ns-a", nsSettings("ns-b")},
		"namespace set later":   {"team-b", nsSettings(""), "", nsSettings("ns-b")},
		"moved to another one":  {"team-c", nsSettings("ns-a"), "ns-a", &events.TeamSettings{Backend: "local"}},
		"namespace unset later": {"team-d", nsSettings("ns-a"), "ns-a", nsSettings("")},
	} {
		t.Run(name, func(t *testing.T) {
			ref := "litellm/" + c.team + "/key-1"
			del := &events.Event{SpecVersion: events.SpecVersion, ID: "del-" + c.team, Type: events.KeyDeleted, Time: time.Now().UTC(),
				TeamID: c.team, KeyID: "key-1", Generation: 2}
			b.steps(&n, b.settingsEvent(c.team, 1, c.before), b.keyEvent(events.KeyCreated, c.team, "key-1", 1, "sk-"+c.team))
			if !ns.has(b.ctx, c.wroteNS, ref) {
				t.Fatalf("the key was not written to namespace %q", c.wroteNS)
			}
			cs := b.steps(&n, b.settingsEvent(c.team, 2, c.after), del)
			if conf := cs[del.ID]; conf == nil || conf.Status != events.StatusDeleted || conf.Provider != nsBackend {
				t.Fatalf("delete confirmed %+v; want deleted on %s", conf, nsBackend)
			}
			if ns.has(b.ctx, c.wroteNS, ref) {
				t.Fatalf("confirmed deleted, but the secret is still in namespace %q, where it was written", c.wroteNS)
			}
			le, _, err := b.ledgerGet(c.team, "key-1")
			if err != nil {
				t.Fatal(err)
			}
			if le.Status != events.StatusDeleted || le.Placement == nil || le.Placement.TeamOptions["namespace"] != c.wroteNS {
				t.Fatalf("ledger after the delete: status %s, placement %+v; want deleted where it was written", le.Status, le.Placement)
			}
		})
	}
}

// TestWriteAfterNamespaceChangeRecordsTheOldCopy: a rotation after the
// team changed its namespace writes to the new one; the copy left in the
// old one is recorded as a source to clean up, with the options it was
// written with (the same backend and name no longer mean the same
// secret), and the entry records the new placement.
func TestWriteAfterNamespaceChangeRecordsTheOldCopy(t *testing.T) {
	b := setup(t, setupOptions{})
	ns := withNamespaces(b)
	b.startWorker(nil)
	n := 0
	ref := "litellm/team-a/key-1"
	b.steps(&n, b.settingsEvent("team-a", 1, nsSettings("ns-a")), b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-1"),
		b.settingsEvent("team-a", 2, nsSettings("ns-b")), b.keyEvent(events.KeyRotated, "team-a", "key-1", 2, "sk-2"))
	if !ns.has(b.ctx, "ns-b", ref) {
		t.Fatal("the rotation was not written to the team's new namespace")
	}
	le, _, err := b.ledgerGet("team-a", "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if le.Placement == nil || le.Placement.TeamOptions["namespace"] != "ns-b" {
		t.Fatalf("entry placement %+v; want ns-b", le.Placement)
	}
	if len(le.Sources) != 1 || le.Sources[0].Backend != nsBackend || le.Sources[0].SecretRef != ref ||
		le.Sources[0].Placement == nil || le.Sources[0].Placement.TeamOptions["namespace"] != "ns-a" {
		t.Fatalf("sources %+v; want the copy in ns-a", le.Sources)
	}
	if le.Previous != nil {
		t.Fatalf("previous version %+v recorded for a version in another namespace", le.Previous)
	}
}

// TestRetireWhereTheRotationWrote: a rotation's previous version is retired
// in the namespace the rotation wrote to, after the team changed its
// namespace during the grace period. It used to be looked for in the new
// namespace, not found, and counted as retired.
func TestRetireWhereTheRotationWrote(t *testing.T) {
	b := setup(t, setupOptions{})
	ns := withNamespaces(b)
	b.startWorker(nil)
	n := 0
	ref := "litellm/team-a/key-1"
	b.steps(&n, b.settingsEvent("team-a", 1, nsSettings("ns-a")), b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-1"))
	le, _, err := b.ledgerGet("team-a", "key-1")
	if err != nil {
		t.Fatal(err)
	}
	v1 := le.ProviderVersion
	rot, err := events.NewKeyEvent(b.ctx, b.kr, events.KeyRotated, "team-a", "key-1", 2, []byte("sk-2"), events.KeyData{GracePeriodSeconds: 3})
	if err != nil {
		t.Fatal(err)
	}
	b.steps(&n, rot, b.settingsEvent("team-a", 2, nsSettings("ns-b")))
	if _, err := ns.store("ns-a").Get(b.ctx, ref, v1); err != nil {
		t.Fatalf("previous version gone before its grace period ended: %v", err)
	}
	waitWithin(t, 20*time.Second, "the previous version retired in ns-a", func() bool {
		_, err := ns.store("ns-a").Get(b.ctx, ref, v1)
		return err != nil
	})
	if !ns.has(b.ctx, "ns-a", ref) {
		t.Fatal("the current version was removed")
	}
}
