package keyvault_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
)

func TestConfigFromOptions(t *testing.T) {
	env := map[string]string{
		"AZURE_KEY_VAULT_URI": "https://myvault.vault.azure.net/",
		"AZURE_TENANT_ID":     "contoso.onmicrosoft.com",
		"AZURE_CLIENT_ID":     "11111111-2222-3333-4444-555555555555",
		"AZURE_CLIENT_SECRET": "s3cr3t-value",
	}
	c, err := keyvault.ConfigFromOptions(map[string]string{"purge_on_force": "false", "timeout": "5s"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.VaultURL != env["AZURE_KEY_VAULT_URI"] || c.TenantID != env["AZURE_TENANT_ID"] || c.ClientSecret != env["AZURE_CLIENT_SECRET"] || !c.NoPurgeOnForce {
		t.Errorf("config %+v", c)
	}
	if c.ContentType != keyvault.DefaultContentType || c.CreatesPer10s != keyvault.DefaultCreatesPer10s {
		t.Errorf("defaults not applied: %+v", c)
	}
	c, err = keyvault.ConfigFromOptions(map[string]string{"vault_url": "https://other.vault.azure.net"}, func(k string) string { return env[k] })
	if err != nil || c.VaultURL != "https://other.vault.azure.net" {
		t.Errorf("option does not win over the environment: %v %q", err, c.VaultURL)
	}
}

func TestValidateNamesField(t *testing.T) {
	ok := "https://v.vault.azure.net"
	for _, tc := range []struct {
		opts  map[string]string
		field string
	}{
		{map[string]string{}, "VaultURL"},
		{map[string]string{"vault_url": "http://v.vault.azure.net"}, "VaultURL"},
		{map[string]string{"vault_url": "https://u:p@v.vault.azure.net"}, "VaultURL"},
		{map[string]string{"vault_url": "https://v.vault.azure.net/?x=1"}, "VaultURL"},
		{map[string]string{"vault_url": ok, "client_secret": "top-secret-x", "client_id": "c"}, "TenantID"},
		{map[string]string{"vault_url": ok, "client_secret": "top-secret-x", "tenant_id": "t"}, "ClientID"},
		{map[string]string{"vault_url": ok, "tenant_id": "t/../x"}, "TenantID"},
		{map[string]string{"vault_url": ok, "authority_host": "http://login"}, "AuthorityHost"},
		{map[string]string{"vault_url": ok, "creates_per_10s": "-1"}, "CreatesPer10s"},
		{map[string]string{"vault_url": ok, "creates_per_10s": "many"}, "CreatesPer10s"},
		{map[string]string{"vault_url": ok, "creates_per_10s": "0.5"}, "CreatesPer10s"},
		{map[string]string{"vault_url": ok, "max_retries": "99"}, "MaxRetries"},
		{map[string]string{"vault_url": ok, "timeout": "soon"}, "Timeout"},
		{map[string]string{"vault_url": ok, "purge_on_force": "maybe"}, "purge_on_force"},
	} {
		_, err := keyvault.ConfigFromOptions(tc.opts, noEnv)
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("options %v: %v, want an error naming %s", tc.opts, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), "top-secret-x") {
			t.Errorf("error echoes the client secret: %v", err)
		}
	}
}

func TestRegister(t *testing.T) {
	r := providers.NewRegistry()
	keyvault.Register(r)
	if names := r.Names(); len(names) != 1 || names[0] != "azure_key_vault" {
		t.Fatalf("names %v", names)
	}
	for _, o := range []string{"vault_url", "tenant_id", "client_id", "client_secret", "authority_host", "ca_bundle",
		"disable_challenge_resource_verification", "creates_per_10s", "purge_on_force", "max_retries"} {
		if r.TeamOptionAllowed(keyvault.Name, o) {
			t.Errorf("a team may set %q", o)
		}
	}
	if !r.TeamOptionAllowed(keyvault.Name, "content_type") {
		t.Error("content_type not allowed for teams")
	}
	_, err := r.Open(context.Background(), keyvault.Name, providers.Config{Options: map[string]string{}, Getenv: func(string) string { return "" }})
	if !errors.Is(err, providers.ErrInvalid) {
		t.Errorf("Open without a vault: %v, want ErrInvalid", err)
	}
	// A full config builds without a network call (client-secret credential).
	_, err = r.Open(context.Background(), keyvault.Name, providers.Config{Options: map[string]string{
		"vault_url": "https://v.vault.azure.net", "tenant_id": "t", "client_id": "c", "client_secret": "s",
	}})
	if err != nil {
		t.Errorf("Open: %v", err)
	}
}

func noEnv(string) string { return "" }
