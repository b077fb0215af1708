package settings

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxFileBytes bounds the configuration file Load reads. LiteLLM files with
// long model lists are large, but nowhere near this.
const MaxFileBytes = 16 << 20

// EnvPrefix is LiteLLM's syntax for a value read from the environment:
// "os.environ/NAME" stands for the value of NAME.
const EnvPrefix = "os.environ/"

// FieldError says which setting is wrong and why. Path is the full dotted
// YAML path (e.g. "keyrelay.worker.claim_lease"); Line is the line in the
// file, or 0 when the error comes from Validate.
type FieldError struct {
	Path   string
	Line   int
	Reason string
}

func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", e.Path, e.Line, e.Reason)
	}
	return e.Path + ": " + e.Reason
}

func fieldErr(path string, line int, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// Load reads the configuration file at path; see Parse. Errors name the
// file.
func Load(path string, getenv func(string) string) (*Config, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, nil, fmt.Errorf("config %s: larger than %d bytes", path, MaxFileBytes)
	}
	c, warnings, err := Parse(data, getenv)
	if err != nil {
		return nil, warnings, fmt.Errorf("config %s: %w", path, err)
	}
	return c, warnings, nil
}

// Parse reads a LiteLLM config.yaml (or a file holding only keyrelay's
// section), applies defaults and validates the result. When the file leaves
// keyrelay.nats.url empty, the checks that hold only on the embedded server
// (keyrelay.lookup.nats_auth: permissions refused, keyrelay.nats.token of 16
// bytes or more) wait for Validate: a command's --nats-url may still name
// an external NATS, and the commands validate again after their flags.
//
// It reads general_settings.key_management_system,
// general_settings.key_management_settings, the top-level keyrelay
// section, and LiteLLM's environment_variables section, which LiteLLM sets
// into its environment before anything else: Config.Getenv and every
// os.environ/ reference see its entries over the process environment, as
// LiteLLM's secret managers do (see environmentVariables). Every other
// section (model_list, litellm_settings, router_settings, the rest of
// general_settings, ...) is ignored without a warning, so a LiteLLM file is
// read unchanged.
//
// Unknown keys inside key_management_settings and keyrelay are not errors:
// they are reported as warnings with their full dotted path, as are a few
// likely mistakes (a misspelt keyrelay section, an environment variable
// that is not set, access_mode read_only together with stored keys).
//
// A scalar written "os.environ/NAME" is replaced by getenv(NAME) before it
// is decoded, for every value Parse reads (strings, numbers, durations,
// booleans, list items, map values). An unset or empty variable makes the
// key count as absent (its default applies) and adds a warning. A key with
// an empty (null) value also counts as absent. Durations are Go duration
// strings ("10m", "1h30m"; a bare 0 is accepted). Booleans accept YAML 1.1
// spellings (yes/no/on/off) because LiteLLM reads its file with PyYAML.
//
// getenv is kept as Config.Getenv for the providers; nil means os.Getenv.
// On error the returned Config is nil; the warnings are returned either way.
func Parse(data []byte, getenv func(string) string) (*Config, []string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := &Config{Getenv: getenv}
	c.setDefaults()
	d := &decoder{getenv: getenv}
	if err := d.document(data, c); err != nil {
		return nil, d.warnings, err
	}
	d.semanticWarnings(c)
	if err := c.validate(true); err != nil {
		return nil, d.warnings, err
	}
	return c, d.warnings, nil
}

type decoder struct {
	getenv   func(string) string
	warnings []string
	// accessModeSet is true when the file sets access_mode explicitly.
	accessModeSet bool
	// depth and work bound the walk: YAML aliases can refer to themselves
	// or fan out exponentially ("billion laughs").
	depth, work int
}

const (
	maxDepth = 32
	maxWork  = 1 << 16
)

// enter accounts for one level of the walk; call leave when done.
func (d *decoder) enter(path string, n *yaml.Node) error {
	d.depth++
	d.work += 1 + len(n.Content)
	if d.depth > maxDepth || d.work > maxWork {
		return fieldErr(orRoot(path), n.Line, "nested too deeply or expanded too often (an alias that refers to itself, or too many aliases)")
	}
	return nil
}

func (d *decoder) leave() { d.depth-- }

func (d *decoder) warnf(format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf(format, args...))
}

// readSection reports whether Parse reads a top-level key; duplicates of
// any other top-level key are LiteLLM's business (PyYAML keeps the last).
func readSection(key string) bool { return key == "general_settings" || key == "keyrelay" }

// readGeneral reports whether Parse reads a general_settings key.
func readGeneral(key string) bool {
	return key == "key_management_system" || key == "key_management_settings"
}

func (d *decoder) document(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: defaults
		}
		return syntaxError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("line %d: a second YAML document; LiteLLM reads one document per file and so does keyrelay", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return syntaxError(data, err)
	}
	root := resolveAlias(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = resolveAlias(root.Content[0])
	}
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: the top level must be a mapping (general_settings:, keyrelay:, ...), not %s", root.Line, kindName(root))
	}
	pairs, err := d.pairs(root, "", readSection)
	if err != nil {
		return err
	}
	// LiteLLM sets environment_variables into its environment before it
	// reads anything else, wherever the section is in the file.
	var vars map[string]string
	for _, p := range pairs {
		if p.key.Value == environmentSection {
			// PyYAML keeps the last of duplicate keys: the last section.
			if vars, err = d.environmentVariables(p.value); err != nil {
				return err
			}
		}
	}
	if len(vars) > 0 {
		process := d.getenv
		d.getenv = func(name string) string {
			if v, ok := vars[name]; ok {
				return v
			}
			return process(name)
		}
		c.Getenv = d.getenv
	}
	for _, p := range pairs {
		switch key := p.key.Value; key {
		case "general_settings":
			if err := d.generalSettings(p.value, c); err != nil {
				return err
			}
		case "keyrelay":
			if _, err := d.decode(p.value, reflect.ValueOf(&c.Keyrelay).Elem(), "keyrelay"); err != nil {
				return err
			}
		case "key_management_system", "key_management_settings":
			d.warnf("%s (line %d): ignored at the top level; LiteLLM and keyrelay read it under general_settings", key, p.key.Line)
		default:
			if looksLike(key, "keyrelay") {
				d.warnf("%s (line %d): top-level section ignored; did you mean keyrelay?", displayKey(key), p.key.Line)
			}
		}
	}
	return nil
}

// environmentSection is LiteLLM's top-level section of environment
// variables.
const environmentSection = "environment_variables"

// environmentVariables reads LiteLLM's environment_variables section as
// LiteLLM's proxy applies it (ProxyConfig._load_environment_variables):
// each entry replaces the process's variable of that name, its value as
// Python's str() writes it (true: "True"); an "os.environ/NAME" entry takes
// NAME's value, and when NAME is unset or empty leaves the variable alone
// (it is left out of the result). Null entries and lists or mappings,
// which no secret manager reads, are left out too. Values, which may be
// credentials, never appear in errors or warnings.
func (d *decoder) environmentVariables(n *yaml.Node) (map[string]string, error) {
	n = resolveAlias(n)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, fieldErr(environmentSection, n.Line, "must be a mapping of variable names to values, not %s", kindName(n))
	}
	pairs, err := d.pairs(n, environmentSection, func(string) bool { return false })
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		name, v := p.key.Value, resolveAlias(p.value)
		delete(out, name) // PyYAML: the last duplicate wins
		if isNull(v) || v.Kind != yaml.ScalarNode {
			continue
		}
		val := v.Value
		if ref, isEnv := envRef(val); isEnv {
			if !validEnvName(ref) {
				return nil, fieldErr(join(environmentSection, name), v.Line, "is not a valid environment variable reference")
			}
			if val = d.getenv(ref); val == "" {
				continue
			}
		} else if b, ok := parseBool(val); ok && v.Style == 0 {
			val = "False"
			if b {
				val = "True"
			}
		}
		out[name] = val
	}
	return out, nil
}

func (d *decoder) generalSettings(n *yaml.Node, c *Config) error {
	const path = "general_settings"
	n = resolveAlias(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fieldErr(path, n.Line, "must be a mapping, not %s", kindName(n))
	}
	pairs, err := d.pairs(n, path, readGeneral)
	if err != nil {
		return err
	}
	for _, p := range pairs {
		switch p.key.Value {
		case "key_management_system":
			if _, err := d.decode(p.value, reflect.ValueOf(&c.KeyManagementSystem).Elem(), path+".key_management_system"); err != nil {
				return err
			}
		case "key_management_settings":
			var km KeyManagementSettings
			kd := &decoder{getenv: d.getenv}
			if _, err := kd.decode(p.value, reflect.ValueOf(&km).Elem(), path+".key_management_settings"); err != nil {
				return err
			}
			// Decode again over the defaults; the first pass only learns
			// which keys the file really sets (for semanticWarnings).
			d.accessModeSet = km.AccessMode != ""
			if _, err := d.decode(p.value, reflect.ValueOf(&c.KeyManagement).Elem(), path+".key_management_settings"); err != nil {
				return err
			}
		}
		// Every other general_settings key is LiteLLM's business.
	}
	return nil
}

// semanticWarnings reports settings that parse but probably do not mean
// what their author expects.
func (d *decoder) semanticWarnings(c *Config) {
	km := c.KeyManagement
	if d.accessModeSet && km.AccessMode == "read_only" && km.StoreVirtualKeys {
		d.warnf("general_settings.key_management_settings.access_mode: read_only makes keyrelay reject every key write " +
			"(LiteLLM only gates reads in this mode); use read_and_write or write_only to store keys, or set store_virtual_keys: false")
	}
	if c.KeyManagementSystem == "custom" {
		d.warnf("general_settings.key_management_system: \"custom\" loads a Python class in LiteLLM; keyrelay has no such provider")
	}
	// keyrelay.providers is keyed by backend: options under any other name
	// are read by no provider, which then runs on its defaults.
	known := make(map[string]int, len(Backends))
	for i, b := range Backends {
		known[b] = i
	}
	names := make([]string, 0, len(c.Keyrelay.Providers))
	for name := range c.Keyrelay.Providers {
		if _, ok := known[name]; !ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		msg := fmt.Sprintf("%s: not a backend name, so no backend uses these options (backends: %s)",
			join(kr+"providers", name), strings.Join(Backends, ", "))
		if s := suggest(name, known); s != "" {
			msg += "; did you mean " + s + "?"
		}
		d.warnings = append(d.warnings, msg)
	}
}

// Backends are the key_management_system names of keyrelay's providers,
// the names keyrelay.providers is keyed by.
var Backends = []string{"aws_secret_manager", "azure_key_vault", "cyberark", "google_secret_manager", "hashicorp_vault", "local"}

type pair struct{ key, value *yaml.Node }

// pairs returns a mapping's key/value pairs with YAML merge keys ("<<")
// expanded; the mapping's own keys win over merged ones, and earlier merge
// sources over later ones. Non-scalar keys are errors, and so are duplicate
// keys for which strict returns true (nil strict: every key). PyYAML, which
// LiteLLM uses, lets the last duplicate win, so keyrelay tolerates
// duplicates only among the keys it does not read.
func (d *decoder) pairs(n *yaml.Node, path string, strict func(string) bool) ([]pair, error) {
	defer d.leave()
	if err := d.enter(path, n); err != nil {
		return nil, err
	}
	var merged, own []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fieldErr(orRoot(path), k.Line, "mapping keys must be single values")
		}
		if k.ShortTag() == "!!merge" {
			m, err := d.mergeSources(v, path, strict)
			if err != nil {
				return nil, err
			}
			merged = append(merged, m...)
			continue
		}
		if line, dup := seen[k.Value]; dup && (strict == nil || strict(k.Value)) {
			return nil, fieldErr(join(path, k.Value), k.Line, "duplicate key (first at line %d)", line)
		}
		seen[k.Value] = k.Line
		own = append(own, pair{k, v})
	}
	if len(merged) == 0 {
		return own, nil
	}
	out := make([]pair, 0, len(merged)+len(own))
	taken := map[string]bool{}
	for _, p := range own {
		taken[p.key.Value] = true
	}
	for _, p := range merged {
		if !taken[p.key.Value] {
			taken[p.key.Value] = true
			out = append(out, p)
		}
	}
	return append(out, own...), nil
}

func (d *decoder) mergeSources(v *yaml.Node, path string, strict func(string) bool) ([]pair, error) {
	v = resolveAlias(v)
	switch v.Kind {
	case yaml.MappingNode:
		return d.pairs(v, path, strict)
	case yaml.SequenceNode:
		var out []pair
		for _, m := range v.Content {
			m = resolveAlias(m)
			if m.Kind != yaml.MappingNode {
				return nil, fieldErr(orRoot(path), m.Line, "a merge (<<) takes mappings only")
			}
			p, err := d.pairs(m, path, strict)
			if err != nil {
				return nil, err
			}
			out = append(out, p...)
		}
		return out, nil
	}
	return nil, fieldErr(orRoot(path), v.Line, "a merge (<<) takes mappings only")
}

var durationType = reflect.TypeOf(time.Duration(0))

// decode sets v from n and reports whether it did: a null node, or a value
// from an unset environment variable, leaves v unchanged (absent key).
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) (bool, error) {
	n = resolveAlias(n)
	defer d.leave()
	if err := d.enter(path, n); err != nil {
		return false, err
	}
	if isNull(n) {
		return false, nil
	}
	t := v.Type()
	switch {
	case t == durationType:
		s, desc, ok, err := d.scalar(n, path)
		if err != nil || !ok {
			return false, err
		}
		dur, err := parseDuration(s, desc)
		if err != nil {
			return false, fieldErr(path, n.Line, "%s", err)
		}
		v.SetInt(int64(dur))
		return true, nil
	case t.Kind() == reflect.Struct:
		return true, d.decodeStruct(n, v, path)
	case t.Kind() == reflect.Pointer:
		nv := reflect.New(t.Elem())
		set, err := d.decode(n, nv.Elem(), path)
		if err != nil || !set {
			return false, err
		}
		v.Set(nv)
		return true, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		if n.Kind != yaml.SequenceNode {
			return false, fieldErr(path, n.Line, "must be a list, not %s", kindName(n))
		}
		out := reflect.MakeSlice(t, 0, len(n.Content))
		for i, item := range n.Content {
			ev := reflect.New(t.Elem()).Elem()
			set, err := d.decode(item, ev, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return false, err
			}
			if set {
				out = reflect.Append(out, ev)
			}
		}
		v.Set(out)
		return true, nil
	case t.Kind() == reflect.Map && t.Key().Kind() == reflect.String:
		if n.Kind != yaml.MappingNode {
			return false, fieldErr(path, n.Line, "must be a mapping, not %s", kindName(n))
		}
		pairs, err := d.pairs(n, path, nil)
		if err != nil {
			return false, err
		}
		out := reflect.MakeMapWithSize(t, len(pairs))
		for _, p := range pairs {
			ev := reflect.New(t.Elem()).Elem()
			set, err := d.decode(p.value, ev, join(path, p.key.Value))
			if err != nil {
				return false, err
			}
			if set || t.Elem().Kind() != reflect.String {
				out.SetMapIndex(reflect.ValueOf(p.key.Value).Convert(t.Key()), ev)
			}
		}
		v.Set(out)
		return true, nil
	}
	s, desc, ok, err := d.scalar(n, path)
	if err != nil || !ok {
		return false, err
	}
	switch t.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, ok := parseBool(s)
		if !ok {
			return false, fieldErr(path, n.Line, "%s is not true or false", desc)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, t.Bits())
		if err != nil {
			return false, fieldErr(path, n.Line, "%s is not a whole number", desc)
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, t.Bits())
		if err != nil {
			return false, fieldErr(path, n.Line, "%s is not a number", desc)
		}
		v.SetFloat(f)
	default:
		panic("settings: no decoder for " + t.String())
	}
	return true, nil
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return fieldErr(path, n.Line, "must be a mapping, not %s", kindName(n))
	}
	pairs, err := d.pairs(n, path, nil)
	if err != nil {
		return err
	}
	fields := yamlFields(v.Type())
	for _, p := range pairs {
		key := p.key.Value
		idx, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("%s (line %d): unknown key, ignored", join(path, key), p.key.Line)
			if s := suggest(key, fields); s != "" {
				msg += "; did you mean " + s + "?"
			}
			d.warnings = append(d.warnings, msg)
			continue
		}
		if _, err := d.decode(p.value, v.Field(idx), join(path, key)); err != nil {
			return err
		}
	}
	return nil
}

// scalar returns n's value with os.environ/ substituted, and how to name
// the value in an error: quoted, or by its environment variable, so that a
// value taken from the environment (possibly a secret) is never echoed. ok
// is false when the value counts as absent (an unset environment variable).
func (d *decoder) scalar(n *yaml.Node, path string) (val, desc string, ok bool, err error) {
	if n.Kind != yaml.ScalarNode {
		return "", "", false, fieldErr(path, n.Line, "must be a single value, not %s", kindName(n))
	}
	name, isEnv := envRef(n.Value)
	if !isEnv {
		return n.Value, strconv.Quote(clip(n.Value)), true, nil
	}
	if !validEnvName(name) {
		return "", "", false, fieldErr(path, n.Line, "%q is not a valid environment variable reference", clip(n.Value))
	}
	val = d.getenv(name)
	if val == "" {
		d.warnf("%s (line %d): environment variable %s is not set or empty; the default applies", path, n.Line, name)
		return "", "", false, nil
	}
	return val, "the value of " + name, true, nil
}

func envRef(s string) (string, bool) {
	if !strings.HasPrefix(s, EnvPrefix) {
		return "", false
	}
	return strings.TrimPrefix(s, EnvPrefix), true
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// parseDuration accepts Go durations and a bare 0; desc names the value in
// errors.
func parseDuration(s, desc string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, fmt.Errorf("%s has no unit; write a Go duration such as \"30s\" or \"10m\"", desc)
		}
		return 0, fmt.Errorf("%s is not a Go duration such as \"30s\", \"10m\" or \"1h\"", desc)
	}
	return dur, nil
}

// parseBool accepts YAML 1.2 and PyYAML (YAML 1.1) spellings.
func parseBool(s string) (value, ok bool) {
	switch s {
	case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON":
		return true, true
	case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF":
		return false, true
	}
	return false, false
}

func yamlFields(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		out[tag] = i
	}
	return out
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	if n == nil {
		return true
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 0 {
		return true
	}
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	}
	return "an unexpected node"
}

func join(path, key string) string {
	key = displayKey(key)
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// displayKey quotes keys that are not plain identifiers, so a hostile key
// cannot forge another path or smuggle control characters into a log line.
func displayKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !(r == '_' || r == '-' || r == '/' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return strconv.Quote(clip(k))
		}
	}
	return clip(k)
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// suggest returns the known key closest to key, if it is close enough to be
// a typo.
func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	best, bestDist := "", 3
	for _, name := range names {
		if dist := editDistance(strings.ToLower(key), name); dist < bestDist {
			best, bestDist = name, dist
		}
	}
	return best
}

// looksLike reports whether key is probably a misspelling of want.
func looksLike(key, want string) bool {
	k := strings.ToLower(strings.TrimSpace(key))
	return k != want && editDistance(k, want) <= 2
}

func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
