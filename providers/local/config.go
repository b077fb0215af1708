package local

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// Option names read by ConfigFromOptions (keyrelay.providers.local in the
// config file, or a team's provider options).
const (
	OptionPath    = "path"
	OptionKeyFile = "key_file"
	OptionFsync   = "fsync"
)

// Defaults and limits.
const (
	// MemoryPath as Config.Path (or an empty Path) selects the in-memory
	// mode.
	MemoryPath = ":memory:"
	// DefaultKeyFileName is the key file created inside Config.Path when
	// Config.KeyFile is empty.
	DefaultKeyFileName = "local.key"
	// MaxNameLength is the longest secret name accepted, in bytes.
	MaxNameLength = 1024
	// MaxValueSize is the largest value accepted, in bytes.
	MaxValueSize = 1 << 20
)

// Config configures a local provider. The zero value is the in-memory mode.
type Config struct {
	// Path is the directory holding the secrets; it is created (0700) when
	// missing. Empty or MemoryPath (":memory:") selects the in-memory mode:
	// nothing is persisted, there is no disk latency (for tests and
	// benchmarks), and without a KeyFile a random key is used.
	// Option "path". Default: in-memory.
	Path string
	// KeyFile is a file holding the 32-byte AES-256 key, base64 (standard
	// encoding, surrounding whitespace ignored). Every value is encrypted
	// with it; losing it loses every secret. Default: <Path>/local.key,
	// created with mode 0600 on first use. A KeyFile set explicitly must
	// already exist. Option "key_file".
	KeyFile string
	// NoFsync skips fsync of secret files and of the directory after each
	// write: faster, but a machine crash may lose or tear recent writes
	// (a process crash never does: writes are still atomic renames).
	// Option "fsync" (default true) is its negation.
	NoFsync bool
}

// DefaultPath is where the registered provider keeps secrets when its
// options name no "path": the embedded default of `make run` must survive a
// restart. Option path ":memory:" selects the in-memory mode explicitly.
const DefaultPath = "./data/secrets"

// ConfigFromOptions builds a Config from a provider options map: "path"
// (default DefaultPath),
// "key_file" and "fsync" (a strconv.ParseBool value, default true). Other
// keys are ignored: the map merges global and per-team options, which may
// carry settings meant for other providers. The result is validated.
func ConfigFromOptions(opts map[string]string) (Config, error) {
	path, ok := opts[OptionPath]
	if !ok {
		path = DefaultPath
	}
	c := Config{
		Path:    strings.TrimSpace(path),
		KeyFile: strings.TrimSpace(opts[OptionKeyFile]),
	}
	if s, ok := opts[OptionFsync]; ok && strings.TrimSpace(s) != "" {
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return Config{}, fmt.Errorf("local: option %q: %q is not a boolean", OptionFsync, s)
		}
		c.NoFsync = !b
	}
	return c, c.Validate()
}

// Validate checks the config and names the bad field.
func (c Config) Validate() error {
	if strings.ContainsRune(c.Path, 0) {
		return fmt.Errorf("local: Config.Path (option %q) contains a NUL byte", OptionPath)
	}
	if strings.ContainsRune(c.KeyFile, 0) {
		return fmt.Errorf("local: Config.KeyFile (option %q) contains a NUL byte", OptionKeyFile)
	}
	if c.KeyFile != "" && strings.HasSuffix(c.KeyFile, string(filepath.Separator)) {
		return fmt.Errorf("local: Config.KeyFile (option %q) %q names a directory", OptionKeyFile, c.KeyFile)
	}
	return nil
}

// InMemory reports whether c selects the in-memory mode.
func (c Config) InMemory() bool { return c.Path == "" || c.Path == MemoryPath }

// keyFile returns the key file path and whether it may be created.
func (c Config) keyFile() (path string, create bool) {
	if c.KeyFile != "" {
		return c.KeyFile, false
	}
	if c.InMemory() {
		return "", false
	}
	return filepath.Join(c.Path, DefaultKeyFileName), true
}
