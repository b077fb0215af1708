package conjur

import (
	"fmt"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
)

func TestHistoryRoundTrip(t *testing.T) {
	var h history
	for v := 1; v <= HistoryLength+5; v++ {
		h = h.with(v, fmt.Sprintf(`ev "%d", :=[]`, v))
	}
	if len(h) != HistoryLength || h[0].version != 6 {
		t.Fatalf("history keeps %d entries from version %d, want %d from 6", len(h), h[0].version, HistoryLength)
	}
	got := historyOf(map[string]string{AnnotationEventHistory: h.String()})
	if got.String() != h.String() {
		t.Errorf("round trip: %s, want %s", got, h)
	}
	// One event, one version; one version, one event.
	h = history{}.with(1, "a").with(2, "b").with(3, "a").with(2, "c")
	if h.String() != `[[2,"c"],[3,"a"]]` {
		t.Errorf("history %s", h)
	}
	if h.upTo(2).String() != `[[2,"c"]]` {
		t.Errorf("upTo(2): %s", h.upTo(2))
	}
}

func TestHistoryOfOlderAnnotations(t *testing.T) {
	for name, tc := range map[string]struct {
		ann  map[string]string
		want string
	}{
		"pair only (written before the history)": {map[string]string{providers.EventTag: "e", AnnotationEventVersion: "4"}, `[[4,"e"]]`},
		"unparsable history":                     {map[string]string{AnnotationEventHistory: "{", providers.EventTag: "e", AnnotationEventVersion: "4"}, `[[4,"e"]]`},
		"bad entries skipped":                    {map[string]string{AnnotationEventHistory: `[[0,"x"],[2,""],["3","y"],[1,"a"]]`}, `[[1,"a"]]`},
		"pair newer than the history":            {map[string]string{AnnotationEventHistory: `[[1,"a"],[2,"e"]]`, providers.EventTag: "e", AnnotationEventVersion: "3"}, `[[1,"a"],[3,"e"]]`},
		"unkeyed write":                          {map[string]string{AnnotationEventHistory: `[[1,"a"]]`, providers.EventTag: "", AnnotationEventVersion: "2"}, `[[1,"a"]]`},
	} {
		t.Run(name, func(t *testing.T) {
			if got := historyOf(tc.ann).String(); got != tc.want {
				t.Errorf("historyOf = %s, want %s", got, tc.want)
			}
		})
	}
}
