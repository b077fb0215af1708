package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/events"
)

func keyringCmd(_ *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keyring", Short: "Manage the AES-256 sealing keyring"}
	var kid string
	gen := &cobra.Command{
		Use:   "generate FILE",
		Short: "Create a keyring file with one fresh key (mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := events.GenerateKeyringFile(args[0], kid); err != nil {
				return err
			}
			fmt.Printf("created %s with active key %s\n", args[0], kid)
			return nil
		},
	}
	gen.Flags().StringVar(&kid, "kid", "k1", "key id")
	var activate bool
	add := &cobra.Command{
		Use:   "add-key FILE KID",
		Short: "Add a fresh key; with --activate new events are sealed with it (old keys still open history)",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			path, kid := args[0], args[1]
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var f events.KeyringFile
			if err := json.Unmarshal(b, &f); err != nil {
				return fmt.Errorf("%s: malformed keyring", path)
			}
			if err := events.ValidateID("kid", kid); err != nil {
				return err
			}
			if _, ok := f.Keys[kid]; ok {
				return fmt.Errorf("key %q already exists", kid)
			}
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			f.Keys[kid] = base64.StdEncoding.EncodeToString(k)
			if activate {
				f.Active = kid
			}
			out, _ := json.MarshalIndent(f, "", "  ")
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
				return err
			}
			if _, err := events.LoadKeyring(tmp); err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, path); err != nil {
				return err
			}
			fmt.Printf("added key %s (active: %s); restart keyrelay processes and publishers to use it (the keyring is read at start)\n", kid, f.Active)
			return nil
		},
	}
	add.Flags().BoolVar(&activate, "activate", false, "make the new key the active one")
	cmd.AddCommand(gen, add)
	return cmd
}
