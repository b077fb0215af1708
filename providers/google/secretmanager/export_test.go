package secretmanager

import "time"

// SetQuotaWindow makes the per-minute limits of c (ProjectWritesPerMinute,
// ReadsPerMinute, AccessPerMinute) hold in windows of d instead, so that
// a test can match a fake's shortened quota windows.
func SetQuotaWindow(c *Config, d time.Duration) { c.quotaWindow = d }
