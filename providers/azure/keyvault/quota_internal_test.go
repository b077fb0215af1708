package keyvault

import "testing"

func TestQuotaName(t *testing.T) {
	for in, want := range map[string]string{
		"https://MyVault.vault.azure.net/": "azure_key_vault/myvault.vault.azure.net/create",
		"https://127.0.0.1:8443":           "azure_key_vault/127.0.0.1:8443/create",
	} {
		if got := quotaName(in, quotaCreate); got != want {
			t.Errorf("quotaName(%q) %q, want %q", in, got, want)
		}
	}
}
