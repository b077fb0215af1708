package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// TestPipelineAWSSecretsManager is the core end-to-end flow with AWS
// Secrets Manager as the backend: kumo behind the kumofront handler (in
// this test process), three `keyrelay serve` processes configured as a
// LiteLLM deployment would be (AWS_REGION_NAME and static keys in the
// environment, the endpoint in keyrelay.providers), 100 keys with eight
// generations each, one worker SIGKILLed midway and restarted, exact
// duplicates re-published after the dedupe window and older generations
// under new ids. AWS loses responses after committing and throttles now
// and then. Afterwards every key's AWSCURRENT holds its newest value, every
// AWS version is the ClientRequestToken of one event of that key (so no
// event made two versions), every stored or rotated confirmation names a
// version holding that generation's value, and every event id has exactly
// one confirmation.
func TestPipelineAWSSecretsManager(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	if !slices.Contains(app.Registry().Names(), secretsmanager.Name) {
		t.Skipf("provider %q is not registered in internal/app.Registry(): add secretsmanager.Register(r) there", secretsmanager.Name)
	}
	const (
		keys      = 100
		fresh     = 8 // per key: key.created then 7 key.rotated
		dupWindow = 2 * time.Second
	)
	front := kumofront.Start(t)
	front.Inject(kumofront.Fault{Action: "PutSecretValue", Status: 503, Code: "ServiceUnavailable", AfterForward: true, Times: 20})
	front.Inject(kumofront.Fault{Action: "CreateSecret", Status: 500, Code: "InternalServiceError", AfterForward: true, Times: 5})
	front.Inject(kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException",
		Header: http.Header{"X-Amz-Retry-After": {"50"}}, Times: 20})

	// The workers inherit LiteLLM's variables, as a LiteLLM deployment
	// would pass them; nothing of the machine's AWS setup leaks in.

	// kumo's store lives as long as this test binary: a fresh prefix.
	prefix := "e2e-" + uuid.NewString()[:8]
	e := newEnv(t, envOptions{system: secretsmanager.Name, dupWindow: dupWindow, backendYML: fmt.Sprintf(`
    aws_secret_manager:
      endpoint: %s
      max_attempts: "1"
      write_tps: "1000"
      control_tps: "1000"`, front.URL)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sc := scenario{keys: keys, teams: 5, fresh: fresh, dupWindow: dupWindow, seed: 5, teamPrefix: prefix + "-"}

	out := sc.run(ctx, t, e)

	p, err := secretsmanager.Factory(ctx, providers.Config{Options: front.Options(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	store := p.(*secretsmanager.Provider)
	// AWS's VersionId is the ClientRequestToken derived from the event id.
	tokenOwner := map[string]string{}
	for id := range out.events {
		tokenOwner[secretsmanager.ClientRequestToken(id)] = id
	}
	r := sc.check(ctx, t, out, backendCheck{store: store, eventOf: func(_ string, v providers.VersionInfo) string {
		if id, ok := tokenOwner[v.Version]; ok {
			return id
		}
		return "not-an-event-token:" + v.Version
	}})
	sc.report(t, secretsmanager.Name, out, r)
	sc.checkLookups(ctx, t, out)
	t.Logf("%d faults injected, %d AWS requests", front.Fired(), len(front.Requests()))
	if front.Fired() == 0 {
		t.Error("no fault was injected")
	}
	if r.unrecorded != 0 {
		t.Errorf("%d AWS versions outside any event's token", r.unrecorded)
	}
}
