package worker

// SetReleaseHook makes every claim release run f first and fail with its
// error; it returns the function that removes it.
func SetReleaseHook(f func() error) (restore func()) {
	releaseHook.Store(&f)
	return func() { releaseHook.Store(nil) }
}
