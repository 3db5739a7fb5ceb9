package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	toml "github.com/pelletier/go-toml/v2"
)

// Load reads the config file at path and returns it like Parse does.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data, the contents of the config file at path ("" when it
// comes from elsewhere), applies the defaults and validates the result.
//
// Decoding is strict: an unknown key, a key in the wrong case or a value of
// the wrong type is an error. Every problem found is reported, each as an
// *Error naming file:line:column and the key, joined with errors.Join in
// file order (see Errors). Checking stops early at a syntax error, at a
// table header of the wrong kind, or after maxRedecodes problems that only
// go-toml finds (keys defined twice, mostly), with the problems found up to
// there. On error the returned Config is nil.
func Parse(path string, data []byte) (*Config, error) {
	// A byte order mark, as some Windows editors write: not part of the
	// text (columns on the first line are counted without it).
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	d := scan(path, data)
	if d.fatal {
		return nil, joinErrors(d.errs)
	}
	cfg, ok := d.decode()
	if !ok {
		return nil, joinErrors(d.errs)
	}
	cfg.Path = path
	applyDefaults(cfg, d, path)
	d.validate(cfg)
	if err := joinErrors(d.errs); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decode decodes d.data with go-toml in strict mode. go-toml stops at the
// first error; decode records it, blanks out the key-value it is in and
// decodes again, so that one run reports every wrong value. ok is false when
// an error could not be set aside that way (it is in a table header, or has
// no position) or after maxRedecodes of them: what was decoded is then not
// worth validating.
func (d *document) decode() (cfg *Config, ok bool) {
	// Each error set aside blanks out a key-value not blanked before, so
	// there are at most len(d.exprs) of them.
	for range maxRedecodes + 1 {
		cfg = &Config{}
		dec := toml.NewDecoder(bytes.NewReader(d.data))
		dec.DisallowUnknownFields()
		err := dec.Decode(cfg)
		if err == nil {
			return cfg, true
		}
		var missing *toml.StrictMissingError
		if errors.As(err, &missing) {
			// Reported once everything else decoded.
			for i := range missing.Errors {
				de := &missing.Errors[i]
				msg := "unknown key"
				if strings.Contains(de.Error(), "missing table") {
					msg = "unknown table"
				}
				d.errs = append(d.errs, d.fromDecodeError(de, msg))
			}
			return cfg, true
		}
		var de *toml.DecodeError
		if !errors.As(err, &de) {
			d.errs = append(d.errs, &Error{File: d.file, Msg: err.Error()})
			return nil, false
		}
		e := d.fromDecodeError(de, "")
		d.errs = append(d.errs, e)
		x := d.exprAt(d.offset(e.Line, e.Col))
		if x == nil || x.blanked {
			return nil, false
		}
		if e.Msg == msgDefinedTwice {
			d.erase(x) // the first definition stands, and is validated
			continue
		}
		d.blank(x)
	}
	d.errs = append(d.errs, &Error{File: d.file, Msg: "too many problems: checking stopped here"})
	return nil, false
}

// maxRedecodes bounds how many errors decode sets aside, each at the cost
// of decoding the whole text again: without a bound, a file with a key
// defined many times takes time quadratic in its size to check.
const maxRedecodes = 100

// msgDefinedTwice is the message for a key or table defined again.
const msgDefinedTwice = "defined twice (a key or table may appear once)"

// go-toml's messages that fromDecodeError rewords, compiled on the first
// error rather than at package initialization, so that a config without
// errors costs no regexp compilation.
var (
	mismatch  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^cannot decode TOML (.+?) into `) })
	redefined = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^(key .* is already defined|table .* already exists)$`)
	})
)

// fromDecodeError turns a go-toml error into an *Error, with msg as its
// message if msg is not "".
func (d *document) fromDecodeError(de *toml.DecodeError, msg string) *Error {
	line, col := de.Position()
	parts := de.Key()
	e := &Error{File: d.file, Line: line, Col: col, Key: keyFromParts(parts)}
	// Prefer the canonical key (with array indexes) indexed at that
	// position when it names the same key, one inside it, or go-toml gave
	// only its last parts: go-toml leaves out array indexes, keys inside
	// inline tables, and the table of a key defined twice.
	if k, ok := d.byOffset[d.offset(line, col)]; ok {
		kp := splitKey(k)
		if len(kp) >= len(parts) && (slices.Equal(kp[:len(parts)], parts) || slices.Equal(kp[len(kp)-len(parts):], parts)) {
			e.Key, parts = k, kp
		}
	}
	if msg != "" {
		if m := suggest(parts); m != "" {
			msg += " (" + m + ")"
		}
		e.Msg = msg
		return e
	}
	e.Msg = strings.TrimPrefix(de.Error(), "toml: ")
	if redefined().MatchString(e.Msg) {
		e.Msg = msgDefinedTwice
	}
	if m := mismatch().FindStringSubmatch(e.Msg); m != nil {
		got := m[1]
		article := "a "
		if strings.ContainsRune("aeiou", rune(got[0])) {
			article = "an "
		}
		e.Msg = "wrong type"
		if t := typeOf(parts); t != nil {
			if strings.HasSuffix(e.Key, "]") {
				t = elemType(t) // an element of the array, not the array
			}
			e.Msg += ": want " + describeType(t) + ", got " + article + got
			if got == "table" && t.Kind() == reflect.Slice {
				e.Msg += " (write [[" + e.Key + "]] for each element)"
			}
		} else {
			e.Msg += ": " + article + got + " does not go here"
		}
	}
	return e
}

// keyFromParts returns the canonical key of go-toml's key parts.
func keyFromParts(parts []string) string {
	key := ""
	for _, p := range parts {
		key = keyJoin(key, p)
	}
	return key
}

// suggest returns a hint for the unknown key parts: the known key it was
// probably meant to be, or "".
func suggest(parts []string) string {
	if len(parts) == 0 {
		return ""
	}
	t := elemType(typeOf(parts[:len(parts)-1]))
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	name := parts[len(parts)-1]
	best, bestDist := "", 3
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if dist := editDistance(name, tag); dist < bestDist {
			best, bestDist = tag, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("did you mean %q?", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// instanceName returns the default instance name for a config file: its
// base name without ".toml", or "forkd" without a file.
func instanceName(path string) string {
	if path == "" {
		return "forkd"
	}
	return strings.TrimSuffix(filepath.Base(path), ".toml")
}
