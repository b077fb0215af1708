package natsconn

import "testing"

func TestRedact(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":    {"nats://a:4222,nats://b:4222", "nats://a:4222,nats://b:4222"},
		"password": {"nats://u:secret-pw@a:4222", "nats://redacted@a:4222"},
		"token":    {"nats://tok123@a:4222, nats://b:4222", "nats://redacted@a:4222,nats://b:4222"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Redact(tc.in); got != tc.want {
				t.Fatalf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
