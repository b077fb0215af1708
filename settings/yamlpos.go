package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// SyntaxError is a YAML syntax error with the position of the problem:
// Line and Column are 1-based (Column 0: not known).
type SyntaxError struct {
	Line, Column int
	Msg          string
	// Err is yaml.v3's error (its line is that of the enclosing construct).
	Err error
}

func (e *SyntaxError) Unwrap() error { return e.Err }

func (e *SyntaxError) Error() string {
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("invalid YAML at line %d, column %d: %s", e.Line, e.Column, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("invalid YAML at line %d: %s", e.Line, e.Msg)
	}
	return "invalid YAML: " + e.Msg
}

// yamlLineRE matches the position yaml.v3 puts in its messages.
var yamlLineRE = regexp.MustCompile(`^yaml: (line \d+: )?`)

// truncation lists the problems a valid document cut short can show (an
// open flow collection or quoted scalar, a key without its colon yet):
// a prefix failing with one of them may still be the start of a valid
// document.
var truncation = []string{
	"found unexpected end of stream",
	"did not find expected ',' or '}'",
	"did not find expected ',' or ']'",
	"did not find expected node content",
	"could not find expected ':'",
}

// maxLocateBytes bounds the documents whose error position is searched
// (the search parses prefixes: quadratic in the size).
const maxLocateBytes = 64 << 10

// syntaxError turns yaml.v3's error for data into a SyntaxError with the
// problem's position. yaml.v3 reports the line where the enclosing
// construct started (the mapping or flow collection), 0-based for parser
// errors, and no column; a problem on line 3 inside a mapping that starts
// on line 2 comes out as "line 1". The problem's position is found here
// as the shortest prefix of data (whole lines, then characters of the
// last line) that fails for a reason other than being cut short.
func syntaxError(data []byte, err error) error {
	msg := yamlLineRE.ReplaceAllString(err.Error(), "")
	if len(data) > maxLocateBytes {
		return &SyntaxError{Msg: msg, Err: err}
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 1 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	line := 0
	for l := 1; l <= len(lines); l++ {
		if fails(bytes.Join(lines[:l], nil), l == len(lines)) {
			line = l
			break
		}
	}
	if line == 0 {
		return &SyntaxError{Msg: msg, Err: err}
	}
	before := bytes.Join(lines[:line-1], nil)
	last := bytes.TrimRight(lines[line-1], "\r\n")
	col := 0
	for k := 1; k <= len(last); k++ {
		if fails(append(append([]byte(nil), before...), last[:k]...), false) {
			col = len([]rune(string(last[:k])))
			break
		}
	}
	return &SyntaxError{Line: line, Column: col, Msg: msg, Err: err}
}

// fails reports whether prefix fails to parse for a reason other than
// being cut short (any failure when final).
func fails(prefix []byte, final bool) bool {
	dec := yaml.NewDecoder(bytes.NewReader(prefix))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return false
		}
		if final {
			return true
		}
		m := err.Error()
		for _, t := range truncation {
			if strings.Contains(m, t) {
				return false
			}
		}
		return true
	}
}
