package secretsmanager_test

import (
	"fmt"
	"strings"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
)

// The VersionId of an event's write is derived from its id alone, so every
// process and every retry sends the same ClientRequestToken.
func ExampleClientRequestToken() {
	fmt.Println(secretsmanager.ClientRequestToken("evt-1"))
	fmt.Println(secretsmanager.ClientRequestToken("evt-1") == secretsmanager.ClientRequestToken("evt-1"))
	// Output:
	// d1453e40-1ba0-54b1-8226-b1b17120c278
	// true
}

// Names AWS accepts are kept, so LiteLLM and keyrelay name a secret alike;
// others are mapped deterministically.
func ExampleSecretID() {
	fmt.Println(secretsmanager.SecretID("litellm/team-1/key-1"))
	mapped := secretsmanager.SecretID("litellm/my alias")
	fmt.Println(strings.HasPrefix(mapped, "litellm/my_alias@"), len(mapped))
	// Output:
	// litellm/team-1/key-1
	// true 49
}
