package conjur_test

import (
	"context"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

const (
	account = "acct"
	login   = "host/keyrelay"
	apiKey  = "api-key-3x4mpl3-do-not-leak"
)

// newFake starts a fake with the branches keyrelay, keyrelay/team-a and
// keyrelay/team-b, the role host/keyrelay allowed on keyrelay (and below),
// and host/team-a allowed on keyrelay/team-a only.
func newFake(t *testing.T) *conjurfake.Server {
	t.Helper()
	srv := conjurfake.New(account)
	t.Cleanup(srv.Close)
	srv.AddBranch("keyrelay/team-a")
	srv.AddBranch("keyrelay/team-b")
	srv.AddUser(login, apiKey, "keyrelay")
	srv.AddUser("host/team-a", "team-a-key", "keyrelay/team-a")
	return srv
}

func config(srv *conjurfake.Server) conjur.Config {
	return conjur.Config{APIBase: srv.URL, Account: account, Username: login, APIKey: apiKey,
		CAPEM: srv.CACertPEM(), SSLVerify: true}
}

func newProvider(t *testing.T, cfg conjur.Config) *conjur.Provider {
	t.Helper()
	p, err := conjur.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newProviderErr(cfg conjur.Config) (*conjur.Provider, error) {
	return conjur.New(context.Background(), cfg, nil)
}

// listPageSize is small, so that the List case (which writes more than
// two pages of one team's secrets) makes List page.
const listPageSize = 3

func TestConformance(t *testing.T) {
	srv := newFake(t)
	providertest.Run(t, func(t *testing.T) providers.Provider {
		cfg := config(srv)
		cfg.ListPageSize = listPageSize
		return newProvider(t, cfg)
	}, providertest.Options{
		Features: providertest.Features{
			MaxVersions:      conjur.MaxVersions,
			SerializedWrites: true,
			ListPageSize:     listPageSize,
		},
		CreateUnmanaged: func(_ context.Context, p providers.Provider, name string, value []byte) error {
			cp := p.(*conjur.Provider)
			id, err := cp.VariableID(name)
			if err != nil {
				return err
			}
			srv.SetVariable(cp.PolicyBranch(), id, map[string]string{"owner-tool": "terraform"}, value)
			return nil
		},
	})
}
