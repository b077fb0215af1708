package local

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// errBadKey marks a key file whose content is not a key.
var errBadKey = errors.New("bad key file")

// GenerateKey returns a new random key in the key_file format (base64 of 32
// bytes, newline-terminated).
func GenerateKey() ([]byte, error) {
	k := make([]byte, keySize)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return []byte(base64.StdEncoding.EncodeToString(k) + "\n"), nil
}

// loadKey reads the key file, creating it when create is set and it does
// not exist. Several processes may race to create it: the file appears
// complete or not at all (written aside, then hard-linked into place), and
// the losers read the winner's key.
func loadKey(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		return createKey(path)
	}
	if err != nil {
		return nil, err
	}
	return parseKey(path, b)
}

func parseKey(path string, b []byte) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		// The decoder's message names an offset, never key material.
		return nil, fmt.Errorf("%w: %s is not base64: %v", errBadKey, path, err)
	}
	if len(k) != keySize {
		return nil, fmt.Errorf("%w: %s holds %d bytes, want %d", errBadKey, path, len(k), keySize)
	}
	return k, nil
}

func createKey(path string) ([]byte, error) {
	enc, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".local.key.*.tmp") // mode 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(enc); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadKey(path, false)
		}
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return parseKey(path, enc)
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
