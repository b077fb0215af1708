package app_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/settings"
)

// TestServeEmbeddedDefault runs what `make run` runs: the embedded
// JetStream server, a generated keyring and the file-backed local provider,
// then publishes an event as a gateway would and reads its confirmation,
// the readiness endpoint and the metrics.
func TestServeEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	c := settings.Default()
	c.Keyrelay.NATS.Embedded.Port = testenv.FreePort(t)
	c.Keyrelay.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	c.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
	c.Keyrelay.HTTP.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Clients = map[string]settings.LookupClient{"team-a": {Team: "team-a", Token: "serve-test-token-team-a"}}
	c.Keyrelay.Providers = map[string]map[string]string{"local": {"path": filepath.Join(dir, "secrets")}}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	lookupAddr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, c, zap.NewNop(), app.ServeOptions{OnReady: func(ops string) { ready <- ops },
			OnLookup: func(addr string) { lookupAddr <- addr }})
	}()
	var ops string
	select {
	case ops = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-ctx.Done():
		t.Fatal("not ready")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + ops + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s", code, body)
	}

	kr, err := events.LoadKeyring(c.Keyrelay.Sealing.KeyringFile)
	if err != nil {
		t.Fatalf("keyring not generated: %v", err)
	}
	// A gateway's connection, as the commands make it: with the token
	// serve generated in its store directory.
	js := connectAsCommand(t, c)
	ev, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", "key-1", 1, []byte("sk-embedded"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *events.Confirmation, 1)
	fctx, fcancel := context.WithCancel(ctx)
	go func() {
		_ = client.FollowConfirmations(fctx, js, 1, "", func(_, _ uint64, c *events.Confirmation) error {
			got <- c
			return nil
		})
	}()
	if _, err := client.NewPublisher(js).Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case cf := <-got:
		if cf.EventID != ev.ID || cf.Status != events.StatusStored || cf.Provider != "local" {
			t.Fatalf("confirmation %+v", cf)
		}
	case <-ctx.Done():
		t.Fatal("no confirmation")
	}
	fcancel()
	// The lookup listener serves the stored value to the team's token.
	lc := &lookupclient.HTTP{BaseURL: "http://" + <-lookupAddr, Token: "serve-test-token-team-a"}
	if s, err := lc.Get(ctx, "key-1"); err != nil || s.Value != "sk-embedded" {
		t.Fatalf("lookup: %+v %v", s, err)
	}
	// The event is counted once it is acked, just after its confirmation.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, body := get("/metrics")
		if strings.Contains(body, `keyrelay_events_total{outcome="stored",type="key.created"} 1`) &&
			strings.Contains(body, `keyrelay_provider_calls_total{op="put",provider="local",status="ok"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack the event:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}

// TestServeOpensKMSSealedValues: with keyrelay.sealing.kms set, publishers
// seal with a KMS-wrapped data key (against a real local-kms) and the
// worker opens those values as well as keyring-sealed ones. /metrics
// serves the keyrelay_seal_* series of every configured key wrapper (here
// also gcp_kms, against the gRPC fake, opening only): the open counted
// under aws_kms.
func TestServeOpensKMSSealedValues(t *testing.T) {
	dir := t.TempDir()
	lk := testenv.StartLocalKMS(t)
	keyID := lk.CreateKey(t, "alias/keyrelay-test")
	gcp, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcp.Close)
	c := settings.Default()
	c.Keyrelay.NATS.Embedded.Port = testenv.FreePort(t)
	c.Keyrelay.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
	c.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
	c.Keyrelay.HTTP.Addr = "127.0.0.1:0"
	c.Keyrelay.Lookup.Addr = "off"
	c.Keyrelay.Providers = map[string]map[string]string{"local": {"path": ":memory:"}}
	c.Keyrelay.Sealing.KMS = map[string]string{"key_id": keyID}
	for k, v := range lk.Options() {
		c.Keyrelay.Sealing.KMS[k] = v
	}
	c.Keyrelay.Sealing.GCPKMS = map[string]string{"endpoint": gcp.Addr(), "insecure": "true"}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, c, zap.NewNop(), app.ServeOptions{OnReady: func(ops string) { ready <- ops }})
	}()
	var ops string
	select {
	case ops = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	// A publisher configured the same way seals with KMS.
	sealing, err := app.LoadSealing(ctx, c, false, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.NewKeyEvent(ctx, sealing.Sealer, events.KeyCreated, "team-a", "key-1", 1, []byte("sk-kms"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	if kd, _ := ev.KeyData(); kd.Value.Alg != events.AlgA256GCMKMS {
		t.Fatalf("sealed with %s, want %s", kd.Value.Alg, events.AlgA256GCMKMS)
	}
	js := connectAsCommand(t, c)
	got := make(chan *events.Confirmation, 1)
	go func() {
		_ = client.FollowConfirmations(ctx, js, 1, "", func(_, _ uint64, c *events.Confirmation) error {
			got <- c
			return nil
		})
	}()
	if _, err := client.NewPublisher(js).Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case cf := <-got:
		if cf.Status != events.StatusStored {
			t.Fatalf("confirmation %+v", cf)
		}
	case <-ctx.Done():
		t.Fatal("no confirmation")
	}
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`keyrelay_seal_operations_total{op="open",result="ok",wrapper="aws_kms"} 1`,
		`keyrelay_seal_kms_calls_total{call="unwrap",wrapper="google_kms"} 0`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, b)
		}
	}
	stop()
	<-done
}

// TestDecryptLiteLLMEnv: with USE_AWS_KMS=True, LITELLM_SECRET_AWS_KMS_*
// variables are decrypted (real local-kms) and providers see the plaintext
// under the unprefixed name, as in LiteLLM.
func TestDecryptLiteLLMEnv(t *testing.T) {
	lk := testenv.StartLocalKMS(t)
	keyID := lk.CreateKey(t, "alias/litellm-env")
	ctx := context.Background()
	out, err := lk.Client().Encrypt(ctx, &awskms.EncryptInput{KeyId: &keyID, Plaintext: []byte("hvs.vault-token")})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("USE_AWS_KMS", "True")
	t.Setenv("LITELLM_SECRET_AWS_KMS_HCP_VAULT_TOKEN", base64.StdEncoding.EncodeToString(out.CiphertextBlob))
	c := settings.Default()
	c.Keyrelay.Sealing.KMS = lk.Options()
	if err := app.DecryptLiteLLMEnv(ctx, c, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if got := c.Env("HCP_VAULT_TOKEN"); got != "hvs.vault-token" {
		t.Fatalf("HCP_VAULT_TOKEN = %q", got)
	}
	if got := c.Env("PATH"); got == "" {
		t.Fatal("other variables are no longer visible")
	}
}

// TestSealingWithGoogleCloudKMS: with keyrelay.sealing.gcp_kms set,
// publishers seal with a Cloud KMS-wrapped data key (against the gRPC
// fake) and the same process's opener opens those values and keyring ones.
func TestSealingWithGoogleCloudKMS(t *testing.T) {
	srv, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	key, err := srv.CreateKey("projects/p/locations/global/keyRings/r/cryptoKeys/keyrelay")
	if err != nil {
		t.Fatal(err)
	}
	c := settings.Default()
	c.Keyrelay.Sealing.KeyringFile = filepath.Join(t.TempDir(), "keyring.json")
	c.Keyrelay.Sealing.GCPKMS = map[string]string{"key_name": key, "endpoint": srv.Addr(), "insecure": "true"}
	ctx := context.Background()
	s, err := app.LoadSealing(ctx, c, true, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, err := s.Sealer.Seal(ctx, []byte("sk-gcp"), b)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Alg != events.AlgA256GCMGCPKMS {
		t.Fatalf("sealed with %s", sv.Alg)
	}
	pt, err := s.Opener.Open(ctx, sv, b)
	if err != nil || string(pt) != "sk-gcp" {
		t.Fatalf("open: %q %v", pt, err)
	}
	kr, err := app.LoadKeyring(c, false, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	local, _ := kr.Seal(ctx, []byte("sk-local"), b)
	if pt, err := s.Opener.Open(ctx, local, b); err != nil || string(pt) != "sk-local" {
		t.Fatalf("keyring value: %q %v", pt, err)
	}
	c.Keyrelay.Sealing.KMS = map[string]string{"key_id": "alias/x"}
	if _, err := app.LoadSealing(ctx, c, false, zap.NewNop()); err == nil {
		t.Fatal("both KMS sealing keys accepted")
	}
}
