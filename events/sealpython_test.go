package events

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSealVectorsPython checks the seal vectors from another language:
// testdata/seal_vectors_check.py seals and opens every positive vector
// (A256GCM, A256GCM-KMS, the envelope algorithms, keyring-wrapped data keys
// unwrapped from edk) and refuses the negative envelope vectors, with
// Python's cryptography package. Skipped without python3 or cryptography.
func TestSealVectorsPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	if err := exec.Command(py, "-c", "import cryptography").Run(); err != nil {
		t.Skip("python3 has no cryptography package (pip install cryptography)")
	}
	out, err := exec.Command(py, "testdata/seal_vectors_check.py", sealVectorsPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("python check: %v\n%s", err, out)
	}
	t.Logf("python: %s", strings.TrimSpace(string(out)))
}
