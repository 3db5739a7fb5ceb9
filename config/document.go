package config

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2/unstable"
)

// document is a config file's text together with where every key and value
// is in it. go-toml reports positions only for the errors it finds while
// decoding; validation happens afterwards, so it looks positions up here.
//
// Scanning the document (scan) also checks what go-toml checks badly: values
// for Duration and Bind (encoding.TextUnmarshaler) fields must be strings —
// go-toml hands other kinds to UnmarshalText as raw text and returns the
// error without a position — and keys must match in case, where go-toml
// would silently accept "Workers" for "workers".
type document struct {
	file string
	// data is the text. Key-values found to be wrong are blanked out
	// (overwritten with spaces, newlines kept) so that decoding can go on
	// and report the rest, with every position unchanged.
	data []byte
	// lines holds the offset of each line's first byte.
	lines []int
	// entries maps a canonical key (see keyJoin) to where it is first
	// defined.
	entries map[string]entry
	// byOffset maps the offset of a key or value to its canonical key.
	byOffset map[int]string
	// exprs are the top-level expressions, in file order.
	exprs []expr
	// bad lists the canonical keys of the key-values that were blanked out.
	bad []string
	// errs collects the problems found, in any order.
	errs []*Error
	// fatal is set when a problem leaves nothing sensible to decode: a
	// syntax error, or a wrong table header.
	fatal bool
	// cur is the index in exprs of the expression being scanned.
	cur int
	// cgroupKeys are where limits that need a cgroup are set
	// (validateLimits), for Config.RefuseLimits.
	cgroupKeys []*Error
}

// entry says where a key is defined.
type entry struct {
	// key is the offset of the key (for a [table] header: of its '[').
	key int
	// value is the offset of the value, -1 for tables.
	value int
}

// expr is one top-level expression.
type expr struct {
	// start and end delimit a key-value's bytes (key through value).
	start, end int
	// header is set for [table] and [[array table]] headers.
	header bool
	// key is the expression's canonical key.
	key string
	// blanked is set once the key-value was blanked out.
	blanked bool
}

var (
	configType          = reflect.TypeOf(Config{})
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
	durationType        = reflect.TypeOf(Duration{})
	bindType            = reflect.TypeOf(Bind{})
	sizeType            = reflect.TypeOf(Size(0))
)

// keyJoin returns the canonical key of name inside base: dotted, with parts
// that are not bare TOML keys quoted (worker.env."A.B").
func keyJoin(base, name string) string {
	if !isBareKey(name) {
		name = strconv.Quote(name)
	}
	if base == "" {
		return name
	}
	return base + "." + name
}

// keyIndex returns the canonical key of element i of the array at base.
func keyIndex(base string, i int) string {
	return base + "[" + strconv.Itoa(i) + "]"
}

// isBareKey reports whether s can be written as a bare TOML key.
func isBareKey(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// splitKey returns the names in a canonical key, without array indexes
// (the form go-toml uses in its errors).
func splitKey(key string) []string {
	var parts []string
	for key != "" {
		switch key[0] {
		case '.':
			key = key[1:]
		case '[':
			_, key, _ = strings.Cut(key, "]")
		case '"':
			q, err := strconv.QuotedPrefix(key)
			if err != nil {
				return append(parts, key)
			}
			name, _ := strconv.Unquote(q)
			parts = append(parts, name)
			key = key[len(q):]
		default:
			end := strings.IndexAny(key, ".[")
			if end < 0 {
				end = len(key)
			}
			parts = append(parts, key[:end])
			key = key[end:]
		}
	}
	return parts
}

// scan parses data and indexes it. Syntax errors and the problems scan
// checks itself end up in d.errs; key-values with problems are blanked out.
func scan(file string, data []byte) *document {
	d := &document{
		file:     file,
		data:     slices.Clip(append([]byte(nil), data...)),
		lines:    []int{0},
		entries:  map[string]entry{},
		byOffset: map[int]string{},
	}
	for i, c := range d.data {
		if c == '\n' {
			d.lines = append(d.lines, i+1)
		}
	}
	if off := firstNotUTF8(d.data); off >= 0 {
		// A TOML file must be UTF-8; go-toml's message for such a byte in
		// a key is only that a key or '=' was expected.
		line, col := d.pos(off)
		d.errs = append(d.errs, &Error{File: file, Line: line, Col: col,
			Msg: fmt.Sprintf("byte 0x%02x is not UTF-8: a TOML file must be UTF-8 text", d.data[off])})
		d.fatal = true
		return d
	}

	var p unstable.Parser
	p.Reset(d.data)
	table := ""                // canonical key of the current table
	var tableType = configType // its Go type; nil when unknown
	arrays := map[string]int{} // array tables: canonical key → elements so far
	for p.NextExpression() {
		n := p.Expression()
		d.cur = len(d.exprs)
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			d.exprs = append(d.exprs, expr{header: true})
			table, tableType = d.header(n, arrays)
			d.exprs[d.cur].key = table
		case unstable.KeyValue:
			d.exprs = append(d.exprs, expr{
				start: int(n.Raw.Offset),
				end:   int(n.Raw.Offset + n.Raw.Length),
				key:   d.dottedKey(table, n),
			})
			d.keyValue(n, table, tableType)
		}
		if d.fatal {
			return d
		}
	}
	if err := p.Error(); err != nil {
		e := &Error{File: file, Msg: "syntax error: " + err.Error()}
		var perr *unstable.ParserError
		if errors.As(err, &perr) {
			// The highlight is a subslice of d.data, whose capacity is its
			// length: the capacities tell the offset.
			off := min(max(cap(d.data)-cap(perr.Highlight), 0), len(d.data))
			e.Line, e.Col = d.pos(off)
		}
		d.errs = append(d.errs, e)
		d.fatal = true
		return d
	}
	for i := range d.exprs {
		x := &d.exprs[i]
		if x.blanked {
			d.blank(x)
		}
	}
	return d
}

// firstNotUTF8 returns the offset of the first byte of b that is not part
// of valid UTF-8, or -1.
func firstNotUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for off := 0; off < len(b); {
		r, size := utf8.DecodeRune(b[off:])
		if r == utf8.RuneError && size == 1 {
			return off
		}
		off += size
	}
	return -1
}

// pos returns the 1-based line and byte column of offset off.
func (d *document) pos(off int) (line, col int) {
	i := sort.Search(len(d.lines), func(i int) bool { return d.lines[i] > off }) - 1
	if i < 0 {
		i = 0
	}
	return i + 1, off - d.lines[i] + 1
}

// offset returns the byte offset of a 1-based line and column.
func (d *document) offset(line, col int) int {
	if line < 1 || line > len(d.lines) {
		return -1
	}
	return d.lines[line-1] + col - 1
}

// add records where key is defined, unless it was defined before.
func (d *document) add(key string, keyOff, valueOff int) {
	if _, ok := d.entries[key]; !ok {
		d.entries[key] = entry{key: keyOff, value: valueOff}
	}
	if _, ok := d.byOffset[keyOff]; !ok {
		d.byOffset[keyOff] = key
	}
	if valueOff >= 0 {
		if _, ok := d.byOffset[valueOff]; !ok {
			d.byOffset[valueOff] = key
		}
	}
}

// problem records an error at offset off about key. In a table header it is
// fatal; in a key-value, the key-value is blanked out after the scan.
func (d *document) problem(off int, key, msg string) {
	line, col := d.pos(off)
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Col: col, Key: key, Msg: msg})
	if d.exprs[d.cur].header {
		d.fatal = true
		return
	}
	d.exprs[d.cur].blanked = true
}

// header indexes a [table] or [[array table]] header and returns the
// table's canonical key and Go type.
func (d *document) header(n *unstable.Node, arrays map[string]int) (string, reflect.Type) {
	var parts []*unstable.Node
	for it := n.Key(); it.Next(); {
		parts = append(parts, it.Node())
	}
	start := int(parts[0].Raw.Offset)
	for start > 0 && (d.data[start-1] == ' ' || d.data[start-1] == '\t') {
		start--
	}
	for i := 0; i < 2 && start > 0 && d.data[start-1] == '['; i++ {
		start--
	}
	d.exprs[d.cur].start = start

	key, t := "", configType
	for i, part := range parts {
		name, off := string(part.Data), int(part.Raw.Offset)
		var msg string
		t, msg = step(t, name)
		key = keyJoin(key, name)
		if msg != "" {
			// A header names tables: [Worker] is an unknown table, as
			// [wroker] is (go-toml's word for that).
			d.problem(off, key, strings.Replace(msg, "unknown key", "unknown table", 1))
			return key, nil
		}
		last := i == len(parts)-1
		if last && t != nil {
			if msg := headerTypeProblem(t, n.Kind, key); msg != "" {
				d.problem(off, key, msg)
				return key, nil
			}
		}
		if !last && t != nil && !holdsTables(t) {
			d.problem(off, key, "wrong type: want "+describeType(t)+", got a table")
			return key, nil
		}
		if !last && t != nil && t.Kind() == reflect.Slice && !isText(t) && arrays[key] == 0 {
			// [hooks.on_exit.x] before any [[hooks.on_exit]]: a table where
			// an array of tables belongs.
			d.problem(off, key, headerTypeProblem(t, unstable.Table, key))
			return key, nil
		}
		switch {
		case last && n.Kind == unstable.ArrayTable:
			d.add(key, off, -1)
			elem := arrays[key]
			arrays[key] = elem + 1
			key = keyIndex(key, elem)
			d.add(key, start, -1)
			d.byOffset[off] = key
			t = elemType(t)
		case arrays[key] > 0:
			// A key through an array table means its last element.
			d.add(key, off, -1)
			key = keyIndex(key, arrays[key]-1)
			t = elemType(t)
		case last:
			d.add(key, start, -1)
			d.byOffset[off] = key
		default:
			d.add(key, off, -1)
		}
	}
	return key, t
}

// dottedKey returns the canonical key of key-value n in table.
func (d *document) dottedKey(table string, n *unstable.Node) string {
	key := table
	for it := n.Key(); it.Next(); {
		key = keyJoin(key, string(it.Node().Data))
	}
	return key
}

// headerTypeProblem says what is wrong with a header of kind k (Table or
// ArrayTable) for a value of Go type t at key, or returns "".
func headerTypeProblem(t reflect.Type, k unstable.Kind, key string) string {
	isSlice := t.Kind() == reflect.Slice && !isText(t)
	switch {
	case isText(t):
		return "wrong type: want " + describeType(t) + ", got a table"
	case isSlice && k == unstable.Table:
		return "wrong type: want " + describeType(t) + ", got a table (write [[" + key + "]] for each element)"
	case !holdsTables(t) && k == unstable.ArrayTable:
		return "wrong type: want " + describeType(t) + ", got an array of tables"
	case !holdsTables(t):
		return "wrong type: want " + describeType(t) + ", got a table"
	case !isSlice && k == unstable.ArrayTable:
		return "wrong type: want " + describeType(t) + ", got an array of tables (write [" + key + "])"
	}
	return ""
}

// keyValue indexes key-value n inside the table with canonical key table and
// Go type t (nil: unknown), and checks its text values.
func (d *document) keyValue(n *unstable.Node, table string, t reflect.Type) {
	key := table
	var last *unstable.Node
	for it := n.Key(); it.Next(); {
		part := it.Node()
		if last != nil {
			d.add(key, int(last.Raw.Offset), -1) // an implicit table
			if t != nil && !holdsTables(t) {
				d.problem(int(last.Raw.Offset), key, "wrong type: want "+describeType(t)+", got a table")
				return
			}
		}
		name := string(part.Data)
		var msg string
		t, msg = step(t, name)
		key = keyJoin(key, name)
		if msg != "" {
			d.problem(int(part.Raw.Offset), key, msg)
			return
		}
		last = part
	}
	v := n.Value()
	voff := d.valueOffset(v, int(last.Raw.Offset+last.Raw.Length))
	d.add(key, int(last.Raw.Offset), voff)
	d.value(v, t, key, voff)
}

// valueOffset returns the offset of value v. Arrays carry no position, so
// for them it is found after the '=' that follows the key ending at keyEnd.
func (d *document) valueOffset(v *unstable.Node, keyEnd int) int {
	if v.Raw.Length > 0 {
		return int(v.Raw.Offset)
	}
	i := keyEnd
	for i < len(d.data) && (d.data[i] == ' ' || d.data[i] == '\t') {
		i++
	}
	if i < len(d.data) && d.data[i] == '=' {
		i++
	}
	for i < len(d.data) && (d.data[i] == ' ' || d.data[i] == '\t') {
		i++
	}
	return i
}

// value indexes value v (at offset off, canonical key key) and checks it
// against Go type t (nil: unknown).
func (d *document) value(v *unstable.Node, t reflect.Type, key string, off int) {
	if t != nil && isText(t) {
		if v.Kind != unstable.String {
			d.problem(off, key, "wrong type: want "+describeType(t)+", got "+describeKind(v.Kind))
			return
		}
		u := reflect.New(t).Interface().(encoding.TextUnmarshaler)
		if err := u.UnmarshalText(v.Data); err != nil {
			d.problem(off, key, err.Error())
		}
		return
	}
	if want, ok := scalarKind(t); ok && v.Kind != want {
		d.problem(off, key, "wrong type: want "+describeType(t)+", got "+describeKind(v.Kind))
		return
	}
	switch v.Kind {
	case unstable.Array:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
		i := 0
		for it := v.Children(); it.Next(); {
			elem := it.Node()
			if elem.Kind == unstable.Comment {
				continue
			}
			ekey := keyIndex(key, i)
			eoff := off
			if elem.Raw.Length > 0 {
				eoff = int(elem.Raw.Offset)
			}
			d.add(ekey, eoff, eoff)
			d.value(elem, et, ekey, eoff)
			i++
		}
	case unstable.InlineTable:
		t = elemType(t)
		for it := v.Children(); it.Next(); {
			if kv := it.Node(); kv.Kind == unstable.KeyValue {
				d.keyValue(kv, key, t)
			}
		}
	}
}

// scalarKind returns the TOML kind a value of Go type t must be written as,
// for strings, booleans and integers; ok is false for other types and for
// nil (unknown). Checking these while scanning reports every wrong element
// of an array or inline table, where go-toml stops at the first.
func scalarKind(t reflect.Type) (k unstable.Kind, ok bool) {
	if t == nil || isText(t) {
		return 0, false
	}
	switch t.Kind() {
	case reflect.String:
		return unstable.String, true
	case reflect.Bool:
		return unstable.Bool, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return unstable.Integer, true
	}
	return 0, false
}

// blank overwrites key-value x with spaces, keeping line breaks, and adds its
// key to d.bad.
func (d *document) blank(x *expr) {
	d.erase(x)
	d.bad = append(d.bad, x.key)
}

// erase overwrites key-value x with spaces, keeping line breaks, without
// marking its key bad: for a key defined again, whose first value stands
// (and is checked).
func (d *document) erase(x *expr) {
	for i := x.start; i < x.end; i++ {
		if d.data[i] != '\n' && d.data[i] != '\r' {
			d.data[i] = ' '
		}
	}
	x.blanked = true
}

// exprAt returns the top-level expression containing offset off, or nil.
func (d *document) exprAt(off int) *expr {
	for i := range d.exprs {
		x := &d.exprs[i]
		if !x.header && x.start <= off && off < x.end {
			return x
		}
	}
	return nil
}

// isBad reports whether key, or a table containing it, was blanked out.
func (d *document) isBad(key string) bool {
	for _, b := range d.bad {
		if strings.HasPrefix(key, b) && (len(key) == len(b) || key[len(b)] == '.' || key[len(b)] == '[') {
			return true
		}
	}
	return false
}

// present reports whether key is written in the document (and was not
// blanked out).
func (d *document) present(key string) bool {
	_, ok := d.entries[key]
	return ok && !d.isBad(key)
}

// at returns the position of key's value (of the key itself for tables),
// falling back to the nearest enclosing table written in the document, and
// to 1:1.
func (d *document) at(key string) (line, col int) {
	for k := key; k != ""; k = parentKey(k) {
		if e, ok := d.entries[k]; ok {
			if e.value >= 0 && k == key {
				return d.pos(e.value)
			}
			return d.pos(e.key)
		}
	}
	return 1, 1
}

// keyAt returns the position of key itself, with at's fallbacks.
func (d *document) keyAt(key string) (line, col int) {
	if e, ok := d.entries[key]; ok {
		return d.pos(e.key)
	}
	return d.at(key)
}

// parentKey returns the canonical key of the table or array containing key
// ("" at the top).
func parentKey(key string) string {
	inQuote, cut := false, 0
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && (c == '.' || c == '['):
			cut = i
		}
	}
	return key[:cut]
}

// isText reports whether values of type t decode through
// encoding.TextUnmarshaler.
func isText(t reflect.Type) bool {
	return t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// holdsTables reports whether a value of type t is a table or an array of
// tables: something a [header] or a dotted key can lead into.
func holdsTables(t reflect.Type) bool {
	e := elemType(t)
	return e.Kind() == reflect.Map || e.Kind() == reflect.Struct && !isText(e)
}

// elemType returns the element type of slice type t, or t itself.
func elemType(t reflect.Type) reflect.Type {
	if t != nil && t.Kind() == reflect.Slice && !isText(t) {
		return t.Elem()
	}
	return t
}

// step returns the Go type of key name inside a value of type t (nil when
// unknown: go-toml's strict mode reports unknown keys). msg is set when name
// cannot be there at all.
func step(t reflect.Type, name string) (reflect.Type, string) {
	t = elemType(t)
	if t == nil {
		return nil, ""
	}
	if isText(t) {
		return nil, ""
	}
	switch t.Kind() {
	case reflect.Map:
		return t.Elem(), ""
	case reflect.Struct:
		var folded string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if tag == "-" || !f.IsExported() {
				continue
			}
			if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
				// An embedded struct's keys are its container's (Program).
				if ft, msg := step(f.Type, name); ft != nil || msg != "" {
					return ft, msg
				}
				continue
			}
			if tag == "" {
				tag = f.Name
			}
			if tag == name {
				return f.Type, ""
			}
			if strings.EqualFold(tag, name) {
				folded = tag
			}
		}
		if folded != "" {
			return nil, "unknown key (keys are case-sensitive: write " + strconv.Quote(folded) + ")"
		}
	}
	return nil, ""
}

// typeOf returns the Go type of the value at a key as go-toml spells it
// (parts without array indexes), or nil.
func typeOf(parts []string) reflect.Type {
	t := reflect.Type(configType)
	for _, p := range parts {
		if t, _ = step(t, p); t == nil {
			return nil
		}
	}
	return t
}

// describeType says what a TOML value for Go type t looks like.
func describeType(t reflect.Type) string {
	switch {
	case t == durationType:
		return `a duration string like "30s"`
	case t == bindType:
		return `a bind string like "tcp://127.0.0.1:8000"`
	case t == sizeType:
		return `a size string like "512M"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		switch e := t.Elem(); {
		case e == durationType:
			return "an array of duration strings"
		case e == bindType:
			return `an array of bind strings like ["tcp://127.0.0.1:8000"]`
		case e.Kind() == reflect.String:
			return "an array of strings"
		case e.Kind() == reflect.Struct || e.Kind() == reflect.Map:
			return "an array of tables"
		}
		return "an array"
	case reflect.Struct, reflect.Map:
		return "a table"
	}
	return t.String()
}

// describeKind names a TOML value kind with its article.
func describeKind(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "an inline table"
	case unstable.DateTime, unstable.LocalDateTime:
		return "a date-time"
	case unstable.LocalDate:
		return "a date"
	case unstable.LocalTime:
		return "a time"
	}
	return "a " + strings.ToLower(k.String())
}
