package lookup_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
)

// TestPythonExample runs the README's Python client
// (examples/python/keyrelay_lookup.py) against the lookup API.
func TestPythonExample(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-a", "py-key", "sk-from-python")
	// Not UTF-8: the API sends it base64-encoded with value_encoding.
	binary := "\xff\xfe\x00sk-binary\x80\n"
	f.write(events.KeyCreated, "team-a", "py-bin", binary)
	script := filepath.Join(testenv.RepoRoot(), "examples", "python", "keyrelay_lookup.py")
	// run returns stdout, stderr and the exit status; token "" leaves
	// KEYRELAY_TOKEN unset.
	run := func(token, name string) ([]byte, string, int) {
		cmd := exec.Command(py, script, name)
		cmd.Env = []string{"KEYRELAY_LOOKUP_URL=" + f.http.URL, "PATH=/usr/bin:/bin"}
		if token != "" {
			cmd.Env = append(cmd.Env, "KEYRELAY_TOKEN="+token)
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return stdout.Bytes(), strings.TrimSpace(stderr.String()), code
	}
	tests := map[string]struct {
		token, name string
		stdout      string
		stderr      string // substring
		code        int
	}{
		"value":                {token: tokenA, name: "py-key", stdout: "sk-from-python\n"},
		"binary value":         {token: tokenA, name: "py-bin", stdout: binary},
		"missing":              {token: tokenA, name: "no-such-key", stderr: "not found", code: 1},
		"bad token":            {token: "wrong-token-wrong-token", name: "py-key", stderr: "401 unauthorized", code: 2},
		"KEYRELAY_TOKEN unset": {name: "py-key", stderr: "set KEYRELAY_TOKEN", code: 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := run(tc.token, tc.name)
			if code != tc.code || string(stdout) != tc.stdout || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q", code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
			if strings.Contains(stderr, "Traceback") {
				t.Fatalf("traceback: %s", stderr)
			}
		})
	}
}
