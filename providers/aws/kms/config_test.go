package kms

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{DataKeyTTL: 5 * time.Minute, DataKeyMaxUses: 1000, SealCacheSize: 1000,
		OpenCacheTTL: 5 * time.Minute, OpenCacheSize: 1000, CallTimeout: 10 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("the zero Config is invalid: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	arn := "arn:aws:kms:us-east-1:111122223333:key/0b7f4a52-9c3e-4d1a-8e6f-2a1b3c4d5e01"
	tests := []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{"alias", Config{KeyID: "alias/keyrelay"}, ""},
		{"key ARN", Config{KeyID: arn, AllowedKeyARNs: []string{arn}}, ""},
		{"alias ARN", Config{KeyID: "arn:aws:kms:us-east-1:111122223333:alias/keyrelay"}, ""},
		{"key id", Config{KeyID: "0b7f4a52-9c3e-4d1a-8e6f-2a1b3c4d5e01"}, ""},
		{"limits", Config{DataKeyTTL: MaxDataKeyTTL, DataKeyMaxUses: MaxDataKeyMaxUses, OpenCacheTTL: time.Second,
			SealCacheSize: 1, OpenCacheSize: MaxCacheSize, CallTimeout: 100 * time.Millisecond}, ""},
		{"key id with a space", Config{KeyID: "alias/key relay"}, "KeyID"},
		{"key id with a dot", Config{KeyID: "alias/key.relay"}, "KeyID"},
		{"key id too long", Config{KeyID: strings.Repeat("a", 2049)}, "KeyID"},
		{"allowed alias", Config{AllowedKeyARNs: []string{"arn:aws:kms:us-east-1:111122223333:alias/x"}}, "AllowedKeyARNs[0]"},
		{"allowed key id", Config{AllowedKeyARNs: []string{arn, "0b7f4a52"}}, "AllowedKeyARNs[1]"},
		{"negative TTL", Config{DataKeyTTL: -time.Second}, "DataKeyTTL"},
		{"TTL too long", Config{DataKeyTTL: 25 * time.Hour}, "DataKeyTTL"},
		{"TTL too short", Config{DataKeyTTL: time.Millisecond}, "DataKeyTTL"},
		{"open TTL too long", Config{OpenCacheTTL: 48 * time.Hour}, "OpenCacheTTL"},
		{"negative uses", Config{DataKeyMaxUses: -1}, "DataKeyMaxUses"},
		{"too many uses", Config{DataKeyMaxUses: MaxDataKeyMaxUses + 1}, "DataKeyMaxUses"},
		{"negative cache", Config{OpenCacheSize: -5}, "OpenCacheSize"},
		{"huge cache", Config{SealCacheSize: MaxCacheSize + 1}, "SealCacheSize"},
		{"tiny timeout", Config{CallTimeout: time.Millisecond}, "CallTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.field != "" && err == nil:
				t.Errorf("Validate accepted it")
			case tc.field != "" && !strings.Contains(err.Error(), tc.field):
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if err != nil && tc.cfg.KeyID != "" && strings.Contains(err.Error(), tc.cfg.KeyID) {
				t.Errorf("error echoes the key id: %v", err)
			}
		})
	}
	if _, err := NewSealer(nil, Config{}); err == nil {
		t.Error("NewSealer without a client")
	}
	if _, err := NewSealer(&countingAPI{}, Config{DataKeyMaxUses: -1}); err == nil {
		t.Error("NewSealer with an invalid config")
	}
}

func TestFromOptions(t *testing.T) {
	arn1 := "arn:aws:kms:us-east-1:111122223333:key/a"
	arn2 := "arn:aws:kms:eu-west-1:111122223333:key/b"
	got, err := FromOptions(map[string]string{
		"key_id": " alias/keyrelay ", "allowed_key_arns": arn2 + ", " + arn1 + ",", "data_key_ttl": "90s",
		"data_key_max_uses": "50", "seal_cache_size": "10", "open_cache_ttl": "1m", "open_cache_size": "20",
		"call_timeout": "3s", "aws_region_name": "us-east-1", "endpoint": "http://127.0.0.1:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{KeyID: "alias/keyrelay", AllowedKeyARNs: []string{arn2, arn1}, DataKeyTTL: 90 * time.Second,
		DataKeyMaxUses: 50, SealCacheSize: 10, OpenCacheTTL: time.Minute, OpenCacheSize: 20, CallTimeout: 3 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("FromOptions = %+v, want %+v", got, want)
	}
	if c, err := FromOptions(nil); err != nil || !reflect.DeepEqual(c, Config{}) {
		t.Errorf("FromOptions(nil) = %+v, %v", c, err)
	}
	for name, opts := range map[string]map[string]string{
		"bad duration": {"data_key_ttl": "5 minutes"},
		"bad number":   {"data_key_max_uses": "many"},
		"out of range": {"open_cache_size": "0x10"},
		"invalid":      {"data_key_max_uses": "-3"},
		"bad key":      {"key_id": "alias/a b"},
	} {
		if _, err := FromOptions(opts); err == nil {
			t.Errorf("FromOptions accepted %s", name)
		}
	}
}
