package worker

import (
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
)

// keepsOriginal reports whether msg's DLQ copy may be its original bytes:
// resending them is safe when the event carries no value (key.updated,
// key.deleted), or when its value was proven sealed, that is it opened in
// this delivery as an authenticated envelope (sealed: verdict.sealed, any
// algorithm but plaintext). A value that did not open (an unknown kid, an
// unsupported algorithm, a ct that fails authentication, which may be a
// plaintext key under a sealed algorithm's name), that was plaintext, or
// whose open was not attempted or did not finish (a KMS outage, a panic)
// is never proven sealed: such events are dead-lettered as the redacted
// summary (redactedCopy). Only the dead-letter path pays for the decode.
func keepsOriginal(msg jetstream.Msg, sealed bool) bool {
	ev, err := events.Decode(msg.Data())
	if err != nil {
		return false
	}
	switch ev.Type {
	case events.KeyUpdated, events.KeyDeleted:
		return true
	case events.KeyCreated, events.KeyRotated:
		return sealed
	}
	// Anything else (settings events are never dead-lettered) is not
	// proven safe to keep.
	return false
}
