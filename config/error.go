package config

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a config file, with where it is. Load and Parse
// return one or more of them joined with errors.Join, in file order; see
// Errors.
type Error struct {
	// File is the config file's path as given ("" when parsed from memory).
	File string
	// Line and Col are the 1-based position of the offending key or value
	// (Col counts bytes); 0 when unknown.
	Line, Col int
	// Key is the full dotted key, e.g. "server.workers" or
	// "hooks.on_starting[0].timeout" (array elements are counted from 0);
	// "" for syntax errors.
	Key string
	// Msg says what is wrong and, where it helps, what to write instead.
	Msg string
}

// Error returns "file:line:col: key: msg", leaving out the parts that are
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if b.Len() > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(e.Line))
		if e.Col > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(e.Col))
		}
	}
	for _, part := range []string{e.Key, e.Msg} {
		if part == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(part)
	}
	return b.String()
}

// Errors returns the *Error values in err, in the order they were joined
// (file order for errors from Load and Parse). It returns nil if err holds
// none.
func Errors(err error) []*Error {
	if err == nil {
		return nil
	}
	var out []*Error
	if e, ok := err.(*Error); ok {
		return []*Error{e}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, Errors(e)...)
		}
		return out
	}
	var e *Error
	if errors.As(err, &e) {
		return []*Error{e}
	}
	return nil
}

// joinErrors sorts errs into file order (errors without a position last)
// and joins them; nil if there are none.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if (a.Line == 0) != (b.Line == 0) {
			return b.Line == 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}
