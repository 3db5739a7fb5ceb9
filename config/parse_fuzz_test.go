package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	toml "github.com/pelletier/go-toml/v2"
)

// parseDeadline is how long one Parse may take before FuzzParse calls it a
// hang: far beyond what any config file needs, even under the race detector
// and the fuzzer's instrumentation.
const parseDeadline = 5 * time.Second

// fuzzPath is the config file path FuzzParse parses its input as.
const fuzzPath = "fuzz.toml"

// FuzzParse feeds Parse arbitrary bytes. It must return a config or an
// error, never panic or hang, and:
//   - an error holds only *Error values, in file order, each naming
//     fuzz.toml and, when it has a position, a line and column inside the
//     text as the prefix "fuzz.toml:line:col: ";
//   - the input is left as it was;
//   - parsing the same bytes again gives the same config or the same error;
//   - a config that loads, written back out as TOML, loads as the same
//     config.
//
// The seed corpus (testdata/fuzz/FuzzParse) holds the files of testdata/
// and the documents of the table tests.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		cfg, err := parseWithin(t, data)
		if !bytes.Equal(data, orig) {
			t.Fatalf("Parse changed its input to %q", data)
		}
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v: want exactly one", cfg != nil, err)
		}
		if err != nil {
			checkFuzzErrors(t, data, err)
			again, err2 := Parse(fuzzPath, data)
			if again != nil || err2 == nil || err2.Error() != err.Error() {
				t.Fatalf("Parse again: got %v, %v\nfirst: %v", again != nil, err2, err)
			}
			return
		}
		again, err := Parse(fuzzPath, data)
		if err != nil {
			t.Fatalf("Parse again: %v", err)
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("Parse again: got %+v\nwant %+v", again, cfg)
		}
		checkRewritten(t, cfg)
	})
}

// parseWithin runs Parse(fuzzPath, data) and fails t if it takes longer
// than parseDeadline.
func parseWithin(t *testing.T, data []byte) (*Config, error) {
	t.Helper()
	type result struct {
		cfg *Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := Parse(fuzzPath, data)
		done <- result{cfg, err}
	}()
	timer := time.NewTimer(parseDeadline)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.cfg, r.err
	case <-timer.C:
		t.Fatalf("Parse did not return within %v", parseDeadline)
		return nil, nil
	}
}

// checkFuzzErrors checks what Parse's error err says about data.
func checkFuzzErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T %q is not joined *Error values", err, err)
	}
	list := joined.Unwrap()
	got := Errors(err)
	if len(got) == 0 || len(got) != len(list) {
		t.Fatalf("error holds %d errors, %d of them *Error: %v", len(list), len(got), err)
	}
	text := bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	lines := bytes.Split(text, []byte("\n"))
	for i, e := range got {
		if e.File != fuzzPath {
			t.Errorf("error %d %q: file %q, want %q", i, e, e.File, fuzzPath)
		}
		if e.Msg == "" {
			t.Errorf("error %d %q: no message", i, e)
		}
		if e.Line == 0 {
			if e.Col != 0 {
				t.Errorf("error %d %q: column %d without a line", i, e, e.Col)
			}
			if !strings.HasPrefix(e.Error(), fuzzPath+": ") {
				t.Errorf("error %d %q does not start with %q", i, e, fuzzPath+": ")
			}
			continue
		}
		if e.Line < 0 || e.Line > len(lines) {
			t.Errorf("error %d %q: line %d, the text has %d", i, e, e.Line, len(lines))
			continue
		}
		if n := len(lines[e.Line-1]); e.Col < 1 || e.Col > n+1 {
			t.Errorf("error %d %q: column %d, line %d has %d bytes", i, e, e.Col, e.Line, n)
		}
		if prefix := fmt.Sprintf("%s:%d:%d: ", fuzzPath, e.Line, e.Col); !strings.HasPrefix(e.Error(), prefix) {
			t.Errorf("error %d %q does not start with %q", i, e, prefix)
		}
		if i > 0 {
			p := got[i-1]
			if p.Line == 0 || p.Line > e.Line || p.Line == e.Line && p.Col > e.Col {
				t.Errorf("errors %d %q and %d %q are not in file order", i-1, p, i, e)
			}
		}
	}
}

// checkRewritten checks that cfg, written back out as TOML (as go-toml
// writes it, with every key, defaults included), loads as cfg again.
func checkRewritten(t *testing.T, cfg *Config) {
	t.Helper()
	text, err := rewrite(cfg)
	if err != nil {
		t.Fatalf("write the config back: %v", err)
	}
	again, err := Parse(cfg.Path, text)
	if err != nil {
		t.Fatalf("the config written back does not load: %v\n%s", err, text)
	}
	want, _ := toml.Marshal(cfg)
	got, _ := toml.Marshal(again)
	if !bytes.Equal(got, want) || again.Path != cfg.Path || again.Worker.Path != cfg.Worker.Path {
		t.Fatalf("the config written back loads as\n%s\nwant\n%s\nfrom\n%s", got, want, text)
	}
}

// rewrite writes cfg as a config file: what go-toml writes, less the keys
// that a config file leaves out rather than writing them empty.
func rewrite(cfg *Config) ([]byte, error) {
	text, err := toml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := toml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("read back what go-toml wrote: %w\n%s", err, text)
	}
	dropEmpty(doc)
	return toml.Marshal(doc)
}

// dropEmpty deletes the keys whose value is "" from t and the tables and
// arrays of tables below it: a file leaves such keys out (worker.dir,
// server.state_dir, a schedule's timezone…) rather than writing them empty.
func dropEmpty(t map[string]any) {
	for k, v := range t {
		switch v := v.(type) {
		case string:
			if v == "" {
				delete(t, k)
			}
		case map[string]any:
			dropEmpty(v)
		case []any:
			for _, e := range v {
				if m, ok := e.(map[string]any); ok {
					dropEmpty(m)
				}
			}
		}
	}
}

// TestParse_manyDuplicates: a key defined thousands of times is checked in
// time linear in the file's size; the first maxRedecodes+1 repeats are
// reported, then that checking stopped.
func TestParse_manyDuplicates(t *testing.T) {
	doc := "[worker]\ncommand = \"/bin/sh\"\n[server]\n" + strings.Repeat("workers = 2\n", 50000)
	_, err := parseWithin(t, []byte(doc))
	got := Errors(err)
	if len(got) != maxRedecodes+2 {
		t.Fatalf("got %d errors, want %d", len(got), maxRedecodes+2)
	}
	if e := got[0]; e.Line != 5 || e.Col != 1 || e.Key != "server.workers" || e.Msg != msgDefinedTwice {
		t.Errorf("first error %q, want fuzz.toml:5:1: server.workers: %s", e, msgDefinedTwice)
	}
	if e := got[len(got)-1]; e.Line != 0 || !strings.Contains(e.Msg, "too many problems") {
		t.Errorf("last error %q, want one saying checking stopped", e)
	}
}
