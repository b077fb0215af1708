package benchkit

import (
	"os/exec"
	"testing"
)

// ReadCPU and ReadSysIO find this process's children by command name, as
// the benches read nats-server and Vault.
func TestSamplesNameChildren(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if _, ok := ReadCPU()["sleep"]; !ok {
		t.Errorf("ReadCPU has no entry for the child: %v", ReadCPU())
	}
	if _, ok := ReadCPU()["bench"]; !ok {
		t.Error("ReadCPU has no entry for this process")
	}
	io := ReadSysIO()
	if _, ok := io["sleep"]; !ok {
		t.Errorf("ReadSysIO has no entry for the child: %v", io)
	}
	if io["bench"][0] == 0 && io["bench"][1] == 0 {
		t.Errorf("ReadSysIO counts no system calls for this process: %v", io)
	}
}
