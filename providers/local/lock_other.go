//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package local

import "os"

// crossProcessLocking is false here: on this platform writes are serialized
// between goroutines of one process only, so one process at a time may use
// a directory.
const crossProcessLocking = false

func tryFlock(*os.File) (bool, error) { return true, nil }

func funlock(*os.File) error { return nil }

func isReadOnlyFS(error) bool { return false }
