package settings

import (
	"errors"
	"strings"
	"testing"
)

// TestSyntaxErrorPosition: a YAML syntax error is reported at the line and
// column of the problem, not where the enclosing mapping or flow
// collection starts (yaml.v3 said "line 1" for the first case).
func TestSyntaxErrorPosition(t *testing.T) {
	tests := map[string]struct {
		yaml       string
		line, col  int
		msgContain string
	}{
		"list item inside a mapping":     {yaml: "general_settings:\n  key_management_system: local\n  - x\n", line: 3, col: 3, msgContain: "did not find expected key"},
		"deeper indentation":             {yaml: "general_settings:\n  key_management_system: local\n   access_mode: x\n", line: 3, col: 15},
		"key and value on one line":      {yaml: "general_settings:\n  key_management_system: local\n  a: b: c\n", line: 3, col: 7},
		"unclosed flow mapping":          {yaml: "keyrelay:\n  nats: {url: x\n  worker: {}\n", line: 3},
		"unclosed flow sequence":         {yaml: "keyrelay:\n  streams: [1,\n    2\nx: 1\n", line: 4},
		"bad character":                  {yaml: "general_settings:\n  key_management_system: local\n  @bad: x\n", line: 3, col: 3},
		"tab indentation":                {yaml: "general_settings:\n  key_management_system: local\n\tkeyrelay: x\n", line: 3, col: 1},
		"top-level item after a mapping": {yaml: "a: 1\nb: 2\n- x\n", line: 3, col: 1},
		"first line":                     {yaml: "keyrelay: [\n", line: 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.yaml), nil)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SyntaxError", err)
			}
			if se.Line != tc.line || (tc.col != 0 && se.Column != tc.col) {
				t.Fatalf("%v: at line %d column %d, want line %d column %d", err, se.Line, se.Column, tc.line, tc.col)
			}
			if tc.msgContain != "" && !strings.Contains(err.Error(), tc.msgContain) {
				t.Fatalf("%v does not say %q", err, tc.msgContain)
			}
		})
	}
}
