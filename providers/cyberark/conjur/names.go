package conjur

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_@+=][A-Za-z0-9_.@+=/-]*$`)

// ValidateName checks that name can be a Conjur variable id written into a
// policy without any chance of YAML or id injection: letters, digits and
// "/_.-@+=" only, no leading '-', '/' or '.', no empty, "." or ".."
// segments, no trailing '/', at most MaxNameLength bytes.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLength:
		return fmt.Errorf("name longer than %d bytes", MaxNameLength)
	case !nameRE.MatchString(name):
		return errors.New("name must use only letters, digits and / _ . - @ + = and not start with - / or .")
	case strings.Contains(name, "//") || strings.HasSuffix(name, "/"):
		return errors.New("name has an empty path segment")
	case hasDotSegment(name):
		return errors.New("name has a '.' or '..' segment")
	}
	return nil
}

// VariableID returns the full Conjur variable id of name in branch.
func VariableID(branch, name string) string {
	if branch == "root" {
		return name
	}
	return branch + "/" + name
}

// yq quotes s as a YAML double-quoted scalar. JSON string syntax is a
// subset of YAML's double-quoted style, so every character is escaped the
// way YAML reads it back.
func yq(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// annotationKeyRE restricts tag names written as annotations.
var annotationKeyRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$`)

// declarePolicy declares variable id with annotations.
func declarePolicy(id string, annotations map[string]string, keys []string) string {
	var b strings.Builder
	b.WriteString("- !variable\n  id: " + yq(id) + "\n")
	if len(keys) > 0 {
		b.WriteString("  annotations:\n")
		for _, k := range keys {
			b.WriteString("    " + yq(k) + ": " + yq(annotations[k]) + "\n")
		}
	}
	return b.String()
}

// deletePolicy removes variable id.
func deletePolicy(id string) string {
	return "- !delete\n  record: !variable " + yq(id) + "\n"
}
