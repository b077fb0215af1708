package worker

import "testing"

func TestParseLedgerKeyRoundTrip(t *testing.T) {
	for _, c := range [][2]string{
		{"team-a", "key-1"}, {"t_1", "K-2"}, {"team@corp", "key+1=x:y"}, {"a", "b"}, {"team-a", "sk=abc:def@x"},
	} {
		team, key, err := ParseLedgerKey(LedgerKey(c[0], c[1]))
		if err != nil || team != c[0] || key != c[1] {
			t.Errorf("%q/%q: got %q/%q, %v", c[0], c[1], team, key, err)
		}
	}
	for _, bad := range []string{"", "nodot", "a.b.c", "=!!.x", ".x"} {
		if _, _, err := ParseLedgerKey(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func FuzzParseLedgerKey(f *testing.F) {
	f.Add("team-a", "key-1")
	f.Add("t@x", "k:y")
	f.Fuzz(func(t *testing.T, team, key string) {
		if team == "" || key == "" {
			return
		}
		tt, kk, err := ParseLedgerKey(LedgerKey(team, key))
		if err != nil || tt != team || kk != key {
			t.Fatalf("%q/%q: got %q/%q, %v", team, key, tt, kk, err)
		}
	})
}
