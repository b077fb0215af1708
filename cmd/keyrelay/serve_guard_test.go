package main

import (
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/settings"
)

// TestReadyMessageMatchesListeners: serve's start-up message names only
// the listeners it runs, at addresses a client can use: with the
// operations listener off (--http off) it says so rather than pointing at
// "http:///metrics", and an IPv6 loopback host is bracketed in the NATS URL.
func TestReadyMessageMatchesListeners(t *testing.T) {
	msg := readyMessage(settings.Default(), "", "", "")
	if strings.Contains(msg, "http:///") || !strings.Contains(msg, "  operations:   off\n") {
		t.Errorf("operations listener off:\n%s", msg)
	}
	v6 := settings.Default()
	v6.Keyrelay.NATS.Embedded.Host = "::1"
	msg = readyMessage(v6, "", "127.0.0.1:9464", "")
	if !strings.Contains(msg, "nats://[::1]:") {
		t.Errorf("IPv6 host:\n%s", msg)
	}
}
