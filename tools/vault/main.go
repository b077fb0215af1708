// Command vault is HashiCorp Vault's own CLI and server, built from its Go
// module at the version go.mod pins, for keyrelay's tests (`vault server
// -dev`). It lives in its own module so Vault's large dependency graph stays
// out of keyrelay's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
