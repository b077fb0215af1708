// Package testenv starts the real servers keyrelay's tests run against:
// nats-server, Vault (dev mode) and local-kms processes on free
// loopback ports with fresh data directories, stopped when the test ends.
//
// Binaries are taken from the repository's bin/ (built by `make tools`) and
// built from the Go module on first use when missing, so `go test` works on
// a fresh clone too.
package testenv
