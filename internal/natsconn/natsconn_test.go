package natsconn

import (
	"strings"
	"testing"
)

// TestRedact: user information never survives, whatever the URL's form.
// Every secret in the table contains "sekret".
func TestRedact(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":                       {"nats://a:4222,nats://b:4222", "nats://a:4222,nats://b:4222"},
		"password":                    {"nats://u:sekret-pw@a:4222", "nats://redacted@a:4222"},
		"token":                       {"nats://sekret123@a:4222, nats://b:4222", "nats://redacted@a:4222,nats://b:4222"},
		"no scheme, password":         {"alice:S3sekretPassw0rd@127.0.0.1:1", "redacted@127.0.0.1:1"},
		"no scheme, token":            {"sekret-token@127.0.0.1:4222", "redacted@127.0.0.1:4222"},
		"no scheme, list":             {"alice:sekret1@a:4222, bob:sekret2@b:4222", "redacted@a:4222,redacted@b:4222"},
		"mixed list":                  {"nats://a:4222,tls://u:sekret@b:4222,c:4222", "nats://a:4222,tls://redacted@b:4222,c:4222"},
		"tls and websocket":           {"tls://sekret@a:4222,wss://u:sekret@b:443/nats", "tls://redacted@a:4222,wss://redacted@b:443/nats"},
		"invalid escape":              {"nats://u:sekret%zz@a:4222", "nats://redacted@a:4222"},
		"slash in password":           {"nats://u:sek/ret@a:4222", "nats://redacted@a:4222"},
		"at sign in password":         {"nats://u:sek@ret@a:4222", "nats://redacted@a:4222"},
		"question mark in password":   {"nats://u:sek?ret#x@a:4222", "nats://redacted@a:4222"},
		"scheme-like password":        {"u:sekret://x@a:4222", "redacted@a:4222"},
		"IPv6 host":                   {"nats://u:sekret@[::1]:4222", "nats://redacted@[::1]:4222"},
		"comma in password":           {"nats://u:sek,ret@a:4222,nats://b:4222", "nats://redacted@a:4222,nats://b:4222"},
		"commas in password":          {"nats://u:sek,r,et@a:4222", "nats://redacted@a:4222"},
		"comma in no-scheme password": {"nats://b:4222,u:sek,ret@a:4222", "nats://redacted@a:4222"},
		"empty":                       {"", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Redact(tc.in)
			if got != tc.want {
				t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, "sek") || strings.Contains(got, "ret@") {
				t.Errorf("Redact(%q) = %q leaks user information", tc.in, got)
			}
		})
	}
}
