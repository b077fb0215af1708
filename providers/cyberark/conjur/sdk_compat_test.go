//go:build conjursdk

// This test drives conjurfake with the official SDK's high-level calls,
// github.com/cyberark/conjur-api-go (LoadPolicy, AddSecret, RetrieveSecret,
// Resource, Resources, ResourcesCount, ForceRefreshToken), to show that the fake speaks the wire
// protocol the SDK speaks; the provider itself sends requests the SDK
// builds (see sdk.go). Run it with -tags conjursdk.

package conjur_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cyberark/conjur-api-go/conjurapi"
	"github.com/cyberark/conjur-api-go/conjurapi/authn"
	"github.com/cyberark/conjur-api-go/conjurapi/response"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
)

func TestFakeWithOfficialSDK(t *testing.T) {
	srv := newFake(t)
	sdk, err := conjurapi.NewClientFromKey(conjurapi.Config{
		ApplianceURL: srv.URL, Account: account, SSLCert: string(srv.CACertPEM()),
		CredentialStorage: conjurapi.CredentialStorageNone, Environment: conjurapi.EnvironmentSH,
	}, authn.LoginPair{Login: login, APIKey: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.LoadPolicy(conjurapi.PolicyModePatch, "keyrelay", strings.NewReader("- !variable\n  id: \"sdk/var\"\n  annotations:\n    \"a\": \"b\"\n")); err != nil {
		t.Fatalf("LoadPolicy: %v", err)
	}
	for _, v := range []string{"one", "two"} {
		if err := sdk.AddSecret("keyrelay/sdk/var", v); err != nil {
			t.Fatalf("AddSecret: %v", err)
		}
	}
	if b, err := sdk.RetrieveSecret("keyrelay/sdk/var"); err != nil || string(b) != "two" {
		t.Fatalf("RetrieveSecret: %q %v", b, err)
	}
	if b, err := sdk.RetrieveSecretWithVersion("keyrelay/sdk/var", 1); err != nil || string(b) != "one" {
		t.Fatalf("RetrieveSecretWithVersion: %q %v", b, err)
	}
	res, err := sdk.Resource(account + ":variable:keyrelay/sdk/var")
	if err != nil || len(res["secrets"].([]interface{})) != 2 {
		t.Fatalf("Resource: %v %v", res, err)
	}
	_, err = sdk.RetrieveSecret("keyrelay/sdk/missing")
	var ce *response.ConjurError
	if !errors.As(err, &ce) || ce.Code != 404 || ce.Details == nil || ce.Details.Code != "not_found" {
		t.Fatalf("missing variable: %#v", err)
	}
	_, err = sdk.LoadPolicy(conjurapi.PolicyModePatch, "other", strings.NewReader("- !variable x\n"))
	if !errors.As(err, &ce) || ce.Code != 404 {
		t.Fatalf("missing branch: %#v", err)
	}
	srv.AddBranch("other")
	_, err = sdk.LoadPolicy(conjurapi.PolicyModePatch, "other", strings.NewReader("- !variable x\n"))
	if !errors.As(err, &ce) || ce.Code != 403 {
		t.Fatalf("forbidden branch: %#v", err)
	}
	// The SDK re-authenticates when told to after the server expired its token.
	srv.ExpireTokens()
	if _, err := sdk.RetrieveSecret("keyrelay/sdk/var"); !errors.As(err, &ce) || ce.Code != 401 {
		t.Fatalf("expired token: %v", err)
	}
	if err := sdk.ForceRefreshToken(); err != nil {
		t.Fatal(err)
	}
	if _, err := sdk.RetrieveSecret("keyrelay/sdk/var"); err != nil {
		t.Fatal(err)
	}
	// And keyrelay's provider reads what the SDK wrote.
	p := newProvider(t, config(srv))
	s, err := p.Get(context.Background(), "sdk/var", "1")
	if err != nil || string(s.Value) != "one" {
		t.Fatalf("provider Get: %v", err)
	}
	if _, err := p.Put(context.Background(), providers.PutRequest{Name: "sdk/var", Value: []byte("x"), Owner: ownerA}); !errors.Is(err, providers.ErrNotOwned) {
		t.Fatalf("provider Put over an unmanaged variable: %v", err)
	}
}

func TestFakeListingWithOfficialSDK(t *testing.T) {
	srv := newFake(t)
	sdk, err := conjurapi.NewClientFromKey(conjurapi.Config{
		ApplianceURL: srv.URL, Account: account, SSLCert: string(srv.CACertPEM()),
		CredentialStorage: conjurapi.CredentialStorageNone, Environment: conjurapi.EnvironmentSH,
	}, authn.LoginPair{Login: login, APIKey: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, config(srv))
	for _, n := range []string{"l/a", "l/b", "l/c"} {
		put(t, p, n, "v")
	}
	srv.SetVariable("keyrelay/team-b", "keyrelay/team-b/unmanaged", map[string]string{"owner-tool": "terraform"}, []byte("v"))

	res, err := sdk.Resources(&conjurapi.ResourceFilter{Kind: "variable", Search: providers.ManagedByValue, Limit: 2, Offset: 1})
	if err != nil || len(res) != 2 || res[0]["id"] != account+":variable:keyrelay/l/b" || res[1]["id"] != account+":variable:keyrelay/l/c" {
		t.Fatalf("Resources page: %v %v", res, err)
	}
	ann, _ := res[0]["annotations"].([]interface{})
	found := false
	for _, a := range ann {
		m, _ := a.(map[string]interface{})
		found = found || m["name"] == providers.ManagedByTag && m["value"] == providers.ManagedByValue && m["policy"] == account+":policy:keyrelay"
	}
	if !found {
		t.Errorf("annotations %v lack {name: managed-by, value: keyrelay, policy}", res[0]["annotations"])
	}
	ids, err := sdk.ResourceIDs(&conjurapi.ResourceFilter{Kind: "variable"})
	if err != nil || len(ids) != 4 {
		t.Fatalf("ResourceIDs: %v %v", ids, err)
	}
	// The search matches the word "keyrelay" in ids too (the branch), so
	// the unmanaged variable counts: List filters by annotations itself.
	n, err := sdk.ResourcesCount(&conjurapi.ResourceFilter{Kind: "variable", Search: providers.ManagedByValue})
	if err != nil || n.Count != 4 {
		t.Fatalf("ResourcesCount: %+v %v", n, err)
	}
	_, err = sdk.Resources(&conjurapi.ResourceFilter{Kind: "variable", Limit: conjurfake.DefaultListLimitMax + 1})
	var ce *response.ConjurError
	if !errors.As(err, &ce) || ce.Code != 422 {
		t.Fatalf("Resources above the maximum: %#v", err)
	}
	_, err = sdk.Resources(&conjurapi.ResourceFilter{Kind: "variable", Role: account + ":user:admin"})
	if !errors.As(err, &ce) || ce.Code != 403 {
		t.Fatalf("Resources acting as a role not held: %#v", err)
	}
	srv.ExpireTokens()
	if _, err := sdk.Resources(&conjurapi.ResourceFilter{Kind: "variable"}); !errors.As(err, &ce) || ce.Code != 401 {
		t.Fatalf("Resources with an expired token: %v", err)
	}
}
