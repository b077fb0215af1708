package events

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkDecode decodes and validates the valid test events a worker sees
// most (created and rotated keys with sealed values).
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"key.created.json", "key.rotated.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "events", "valid", name))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ev, err := Decode(raw)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ev.KeyData(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
