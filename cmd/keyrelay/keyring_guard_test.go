package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// TestKeyringAddKeyToMalformedFile: `keyrelay keyring add-key` on a
// keyring file without keys (JSON "null", "{}", keys null) says what is
// wrong and leaves the file alone; it used to panic (a nil map).
func TestKeyringAddKeyToMalformedFile(t *testing.T) {
	for _, body := range []string{`null`, `{}`, `{"active":"k1"}`, `{"active":"k1","keys":null}`} {
		path := filepath.Join(t.TempDir(), "keyring.json")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out string
		var err error
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: add-key panicked: %v", body, r)
				}
			}()
			out, err = runCommand(ctx, keyringCmd(&globals{}), "add-key", path, "k2")
		}()
		cancel()
		if err == nil {
			t.Errorf("%s: add-key succeeded:\n%s", body, out)
		}
		if b, _ := os.ReadFile(path); string(b) != body {
			t.Errorf("%s: the file was changed to %s", body, b)
		}
	}
	// A good keyring still takes the key.
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := events.GenerateKeyringFile(path, "k1"); err != nil {
		t.Fatal(err)
	}
	if out, err := runCommand(context.Background(), keyringCmd(&globals{}), "add-key", path, "k2"); err != nil {
		t.Fatalf("add-key: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), `"k2"`) {
		t.Fatalf("k2 not added: %s", b)
	}
}

// TestKeyringAddKeyKeepsFileMode: add-key writes the new keyring through
// FILE.tmp; a FILE.tmp left with a wider mode (a copy, an earlier tool)
// must not make the keyring, which holds the keys, readable by others.
func TestKeyringAddKeyKeepsFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	if err := events.GenerateKeyringFile(path, "k1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", []byte("left over"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path+".tmp", 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCommand(context.Background(), keyringCmd(&globals{}), "add-key", path, "k2"); err != nil {
		t.Fatalf("add-key: %v\n%s", err, out)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		t.Fatalf("the keyring is mode %o after add-key", m)
	}
}
