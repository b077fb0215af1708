package events

import (
	"encoding/base64"
	"math/rand/v2"
	"strings"
	"testing"
)

// strictCanonical is the definition isCanonicalBase64 implements without
// decoding.
func strictCanonical(s string) bool {
	if strings.ContainsAny(s, "\r\n") {
		return false
	}
	_, err := base64.StdEncoding.Strict().DecodeString(s)
	return err == nil
}

func TestIsCanonicalBase64MatchesStrictDecoding(t *testing.T) {
	cases := []string{"", "=", "==", "===", "====", "A===", "AA==", "AB==", "AAA=", "AAB=", "AAAA", "AA=A", "A=AA",
		"QUJD", "QUI=", "QUJ=", "QQ==", "QR==", "QUJDRA==", "QUJD\nRA==", "QUJD RA==", "QU-D", "QU_D", "QUJD====",
		"\x00AAA", "AA\xffA"}
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "AQgw+/=\n-_ 9z"
	for i := 0; i < 200000; i++ {
		b := make([]byte, r.IntN(13))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for i := 0; i < 2000; i++ {
		b := make([]byte, r.IntN(40))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		cases = append(cases, base64.StdEncoding.EncodeToString(b), string(b))
	}
	for _, c := range cases {
		if got, want := isCanonicalBase64(c), strictCanonical(c); got != want {
			t.Fatalf("isCanonicalBase64(%q) = %v, strict decoding says %v", c, got, want)
		}
	}
}
