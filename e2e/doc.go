// Package e2e runs keyrelay as a user does: real nats-server and keyrelay
// processes, events published over the wire, workers killed with SIGKILL.
package e2e
