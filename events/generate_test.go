package events

import "testing"

// TestGenerate rewrites every generated artefact of the contract, in
// dependency order, when run with -update:
//
//	go test ./events -run TestGenerate -update
//
// then review the diff. Without -update it is skipped and every other test
// checks the committed files against the code.
func TestGenerate(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/ and the sealed examples of docs/events.md")
	}
	generateSealVectors(t)  // testdata/seal_vectors.json
	generateEventVectors(t) // testdata/events/{valid,invalid}/
	generateFuzzCorpus(t)   // testdata/fuzz/{FuzzDecode,FuzzOpen}/seed-*
	generateDocs(t)         // sealed values and AAD block in docs/events.md
}
