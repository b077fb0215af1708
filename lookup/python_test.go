package lookup_test

import (
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
	script := filepath.Join(testenv.RepoRoot(), "examples", "python", "keyrelay_lookup.py")
	run := func(token, name string) (string, int) {
		cmd := exec.Command(py, script, name)
		cmd.Env = []string{"KEYRELAY_LOOKUP_URL=" + f.http.URL, "KEYRELAY_TOKEN=" + token, "PATH=/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)), code
	}
	if out, code := run(tokenA, "py-key"); code != 0 || out != "sk-from-python" {
		t.Fatalf("exit %d: %s", code, out)
	}
	if out, code := run(tokenA, "no-such-key"); code != 1 || out != "not found" {
		t.Fatalf("missing: exit %d: %s", code, out)
	}
	if out, code := run("wrong-token-wrong-token", "py-key"); code != 2 || !strings.Contains(out, "401 unauthorized") {
		t.Fatalf("bad token: exit %d: %s", code, out)
	}
}
