package kms

import (
	"testing"
)

func TestCryptoKeyOf(t *testing.T) {
	for in, want := range map[string]string{
		testKey:                             testKey,
		testKey + "/cryptoKeyVersions/12":   testKey,
		testKey + "/cryptoKeyVersions/0":    "",
		"projects/p/locations/l/keyRings/r": "",
		"":                                  "",
		testKey + "/":                       "",
	} {
		if got := CryptoKeyOf(in); got != want {
			t.Errorf("CryptoKeyOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewClientOptions(t *testing.T) {
	for name, opts := range map[string]map[string]string{
		"insecure without endpoint": {OptionInsecure: "true"},
		"insecure with credentials": {OptionInsecure: "true", OptionEndpoint: "127.0.0.1:1", OptionCredentialsFile: "/x.json"},
		"bad bool":                  {OptionInsecure: "perhaps", OptionEndpoint: "127.0.0.1:1"},
		"endpoint url":              {OptionEndpoint: "https://kms.example/"},
		"missing CA":                {OptionEndpoint: "127.0.0.1:1", OptionCABundle: "/nonexistent/ca.pem"},
	} {
		if _, err := NewClient(bg, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := NewClient(bg, map[string]string{OptionInsecure: "true", OptionEndpoint: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
}
