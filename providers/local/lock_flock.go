//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package local

import (
	"errors"
	"os"
	"syscall"
)

// crossProcessLocking reports whether secret files are locked against other
// processes (flock) as well as other goroutines.
const crossProcessLocking = true

// tryFlock takes an exclusive flock on f without blocking; ok is false when
// another open file description holds it.
func tryFlock(f *os.File) (ok bool, err error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		default:
			return false, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
	}
}

func funlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

func isReadOnlyFS(err error) bool { return errors.Is(err, syscall.EROFS) }
