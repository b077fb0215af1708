package settings

import "testing"

func TestSealingKMSSection(t *testing.T) {
	c, w, err := Parse([]byte("keyrelay:\n  sealing:\n    kms:\n      key_id: alias/keyrelay\n      aws_region_name: us-east-1\n"), func(string) string { return "" })
	if err != nil || len(w) != 0 || c.Keyrelay.Sealing.KMS["key_id"] != "alias/keyrelay" {
		t.Fatalf("%v %v %+v", err, w, c.Keyrelay.Sealing.KMS)
	}
}
