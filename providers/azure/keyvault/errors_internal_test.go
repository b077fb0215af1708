package keyvault

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		h    map[string]string
		want time.Duration
	}{
		{map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{map[string]string{"Retry-After": "0"}, 0},
		{map[string]string{"retry-after-ms": "250"}, 250 * time.Millisecond},
		{map[string]string{"x-ms-retry-after-ms": "1500", "Retry-After": "9"}, 1500 * time.Millisecond},
		{map[string]string{"Retry-After": "soon"}, 0},
		{map[string]string{}, 0},
	} {
		h := http.Header{}
		for k, v := range tc.h {
			h.Set(k, v)
		}
		if got := retryAfter(h); got != tc.want {
			t.Errorf("retryAfter(%v) = %v, want %v", tc.h, got, tc.want)
		}
	}
	h := http.Header{}
	h.Set("Retry-After", time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat))
	if got := retryAfter(h); got < 25*time.Second || got > 31*time.Second {
		t.Errorf("HTTP-date Retry-After gave %v", got)
	}
}

func TestSanitize(t *testing.T) {
	in := `GET https://v.vault.azure.net/secrets/x?api-version=7.6 Authorization: Bearer eyJ0eXAi.abc.def value=hunter2-secret`
	got := sanitize(in, []byte("hunter2-secret"))
	for _, bad := range []string{"https://", "api-version", "eyJ0eXAi", "hunter2-secret"} {
		if strings.Contains(got, bad) {
			t.Errorf("sanitize left %q in %q", bad, got)
		}
	}
	e := classify("get", "n", errors.New("weird failure at "+in), []byte("hunter2-secret"))
	if !errors.Is(e, providers.ErrUnavailable) || e.Kind != providers.Retryable || strings.Contains(e.Error(), "hunter2") || strings.Contains(e.Error(), "https://") {
		t.Errorf("classify: %v", e)
	}
}
