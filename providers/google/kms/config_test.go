package kms

import (
	"strings"
	"testing"
	"time"
)

func TestFromOptions(t *testing.T) {
	c, err := FromOptions(map[string]string{
		OptionKeyName: " " + testKey + " ", OptionAllowedKeyNames: testKey + ", " + otherKey,
		OptionDataKeyTTL: "1m", OptionDataKeyMaxUses: "10", OptionOpenCacheTTL: "2m", OptionCallTimeout: "3s",
		OptionSealCacheSize: "5", OptionOpenCacheSize: "6", OptionEndpoint: "ignored:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyName != testKey || len(c.AllowedKeyNames) != 2 || c.DataKeyTTL != time.Minute || c.DataKeyMaxUses != 10 ||
		c.OpenCacheTTL != 2*time.Minute || c.CallTimeout != 3*time.Second || c.SealCacheSize != 5 || c.OpenCacheSize != 6 {
		t.Fatalf("%+v", c)
	}
	if c, err := FromOptions(nil); err != nil || c.KeyName != "" {
		t.Fatalf("empty options: %+v, %v", c, err)
	}
	for name, opts := range map[string]map[string]string{
		"alias-like key":     {OptionKeyName: "alias/keyrelay"},
		"key ring only":      {OptionKeyName: "projects/p/locations/global/keyRings/r"},
		"version in allowed": {OptionAllowedKeyNames: testKey + "/cryptoKeyVersions/1"},
		"bad duration":       {OptionDataKeyTTL: "5"},
		"bad number":         {OptionDataKeyMaxUses: "many"},
		"ttl too long":       {OptionDataKeyTTL: "25h"},
		"zero uses":          {OptionDataKeyMaxUses: "-1"},
	} {
		if _, err := FromOptions(opts); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasPrefix(err.Error(), "google_kms config:") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := FromOptions(map[string]string{OptionKeyName: testKey + "/cryptoKeyVersions/3"}); err != nil {
		t.Errorf("a version as key_name: %v", err)
	}
}

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
