package secretmanager_test

import (
	"fmt"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
)

// Register the provider; a team may then set only its project,
// replication, locations and version hygiene.
func ExampleRegister() {
	r := providers.NewRegistry()
	secretmanager.Register(r)
	fmt.Println(r.Names(), r.TeamOptionAllowed(secretmanager.Name, "project"), r.TeamOptionAllowed(secretmanager.Name, "endpoint"))
	// Output: [google_secret_manager] true false
}

// Names Secret Manager cannot hold are mapped deterministically.
func ExampleSecretID() {
	fmt.Println(secretmanager.SecretID("litellm_key-1"))
	fmt.Println(len(secretmanager.SecretID("team-a/keys/sk.1")) <= secretmanager.MaxSecretIDLength)
	// Output:
	// litellm_key-1
	// true
}
