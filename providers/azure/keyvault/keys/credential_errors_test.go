package keys_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/keys"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	"github.com/keyrelay/keyrelay/seal"
)

// TestInvalidClientSecretIsPermanent: a client secret Entra ID refuses
// (401 invalid_client, AADSTS7000215) stays refused until an operator
// fixes the configuration. The sealer must say so at once, a permanent
// access denied, and not have the worker retry every event forever.
func TestInvalidClientSecretIsPermanent(t *testing.T) {
	srv := kvfake.New()
	t.Cleanup(srv.Close)
	srv.ClientID = "11111111-2222-3333-4444-555555555555"
	srv.ClientSecret = "client-secret-value-1"
	ca, err := srv.WriteCABundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const wrong = "client-secret-rotated-away"
	opts := map[string]string{
		keys.OptionVaultURL: srv.URL, keys.OptionCABundle: ca, keys.OptionAuthorityHost: srv.URL,
		keys.OptionTenantID: kvfake.DefaultTenant, keys.OptionClientID: srv.ClientID, keys.OptionClientSecret: wrong,
		keys.OptionDisableInstanceDiscovery: "true", keys.OptionDisableChallRes: "true", keys.OptionKeyName: "keyrelay-kek",
	}
	s, err := keys.New(context.Background(), opts, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Seal(context.Background(), []byte("sk-value"), events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
	if err == nil {
		t.Fatal("Seal succeeded with a client secret the token endpoint refuses")
	}
	t.Logf("Seal: %v", err)
	if providers.IsRetryable(err) || !errors.Is(err, providers.ErrAccessDenied) {
		t.Errorf("Seal with an invalid client secret: %v (retryable %v), want a permanent ErrAccessDenied", err, providers.IsRetryable(err))
	}
	if !strings.Contains(err.Error(), "AADSTS7000215") {
		t.Errorf("Seal error %q does not name Entra ID's error code", err)
	}
	for _, bad := range []string{wrong, "sk-value", "https://"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("Seal error contains %q: %v", bad, err)
		}
	}
}

// failingAPI fails every call with err.
type failingAPI struct{ err error }

func (f failingAPI) WrapKey(context.Context, string, string, azkeys.KeyOperationParameters, *azkeys.WrapKeyOptions) (azkeys.WrapKeyResponse, error) {
	return azkeys.WrapKeyResponse{}, f.err
}

func (f failingAPI) UnwrapKey(context.Context, string, string, azkeys.KeyOperationParameters, *azkeys.UnwrapKeyOptions) (azkeys.UnwrapKeyResponse, error) {
	return azkeys.UnwrapKeyResponse{}, f.err
}

// TestCredentialUnavailableIsRetryable: DefaultAzureCredential with no
// source available (the managed identity endpoint not answering yet at
// boot) is retried, as by the secrets provider.
func TestCredentialUnavailableIsRetryable(t *testing.T) {
	for name, msg := range map[string]string{
		"refused":   "DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tManagedIdentityCredential: dial tcp 169.254.169.254:80: connect: connection refused",
		"timed out": "ManagedIdentityCredential: managed identity timed out. See https://aka.ms/azsdk/go/identity/troubleshoot#dac for more information",
	} {
		t.Run(name, func(t *testing.T) {
			w, err := keys.NewWrapper(failingAPI{azidentity.NewCredentialUnavailableError(msg)}, "keyrelay-kek")
			if err != nil {
				t.Fatal(err)
			}
			_, err = w.Wrap(context.Background(), make([]byte, 32), seal.Context{})
			if c := w.Classify(err); c.Kind != providers.Retryable || !errors.Is(err, providers.ErrUnavailable) || errors.Is(err, providers.ErrAccessDenied) {
				t.Errorf("Wrap: %v (kind %v), want a retryable ErrUnavailable", err, c.Kind)
			}
			if strings.Contains(err.Error(), "https://") {
				t.Errorf("Wrap error contains a URL: %v", err)
			}
		})
	}
}
