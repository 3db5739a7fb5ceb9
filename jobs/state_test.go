package jobs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestState_roundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "forkd") // created by Save
	s, err := OpenState(dir)
	if err != nil {
		t.Fatalf("OpenState(missing dir): %v", err)
	}
	if got := s.Last("cleanup"); !got.IsZero() {
		t.Errorf("Last in an empty state = %v", got)
	}
	seoul := mustZone(t, "Asia/Seoul")
	t1 := time.Date(2025, 6, 1, 3, 0, 0, 0, seoul)
	t2 := time.Now() // carries a monotonic reading and nanoseconds
	s.Set("cleanup", t1)
	s.Set("report", t2)
	s.Set("gone", t1)
	s.Set("gone", time.Time{})
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v, %v; want mode 0700", di.Mode(), err)
	}

	s2, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Last("cleanup"); !got.Equal(t1) {
		t.Errorf("Last(cleanup) = %v, want %v", got, t1)
	}
	if got := s2.Last("report"); !got.Equal(t2) {
		t.Errorf("Last(report) = %v, want %v", got, t2)
	}
	if got := s2.Names(); !slices.Equal(got, []string{"cleanup", "report"}) {
		t.Errorf("Names() = %v", got)
	}
	// Nothing but the state file is left in the directory.
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != StateFile {
		t.Errorf("state dir holds %v (%v), want only %s", entries, err, StateFile)
	}
	data, _ := os.ReadFile(s.Path())
	if !strings.Contains(string(data), `"version": 1`) || !strings.Contains(string(data), `"cleanup": "2025-05-31T18:00:00Z"`) {
		t.Errorf("state file:\n%s", data)
	}
}

func TestState_corrupt(t *testing.T) {
	for name, content := range map[string]string{
		"not JSON":        "{\"version\": 1, \"last_run\": {\"a\": ",
		"empty":           "",
		"wrong version":   `{"version": 2, "last_run": {}}`,
		"bad time":        `{"version": 1, "last_run": {"a": "yesterday"}}`,
		"unknown field":   `{"version": 1, "last_run": {}, "next": {}}`,
		"trailing data":   `{"version": 1, "last_run": {}} {}`,
		"wrong type":      `{"version": 1, "last_run": ["a"]}`,
		"binary garbage":  "\x00\x01\x02",
		"truncated write": `{"version": 1, "last_run": {"a": "2025-06-01T03:00:00Z"`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenState(dir)
			if s == nil {
				t.Fatal("OpenState returned no State")
			}
			if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "moved to "+path+".corrupt") {
				t.Fatalf("OpenState = %v, want a warning wrapping ErrCorruptState naming the file and where it went", err)
			}
			if len(s.Names()) != 0 {
				t.Errorf("a corrupt file gave names %v", s.Names())
			}
			if kept, _ := os.ReadFile(path + ".corrupt"); string(kept) != content {
				t.Errorf("the corrupt file was not kept aside: %q", kept)
			}
			// Replaced: the next Save writes a good file, read without warning.
			s.Set("a", time.Date(2025, 6, 1, 3, 0, 0, 0, time.UTC))
			if err := s.Save(); err != nil {
				t.Fatal(err)
			}
			s2, err := OpenState(dir)
			if err != nil || s2.Last("a").IsZero() {
				t.Errorf("after Save: %v, last %v", err, s2.Last("a"))
			}
		})
	}
}

func TestState_unreadable(t *testing.T) {
	dir := t.TempDir()
	// A directory where the file belongs: unreadable, not corrupt.
	if err := os.Mkdir(filepath.Join(dir, StateFile), 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := OpenState(dir)
	if s == nil || err == nil || errors.Is(err, ErrCorruptState) {
		t.Fatalf("OpenState = %v, %v; want a State and a warning that is not ErrCorruptState", s, err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile+".corrupt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an unreadable file was moved aside: %v", err)
	}
	s.Set("a", time.Now())
	if err := s.Save(); err == nil || !strings.HasPrefix(err.Error(), "save schedule state: ") {
		t.Errorf("Save over a directory = %v, want a wrapped error", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("a failed Save left files behind: %v", entries)
	}
}

// TestState_replaceKeepsOld: a Save that cannot finish leaves the old file.
func TestState_replaceKeepsOld(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes into read-only directories: cannot make the write fail this way")
	}
	dir := t.TempDir()
	s, _ := OpenState(dir)
	s.Set("a", time.Date(2025, 6, 1, 3, 0, 0, 0, time.UTC))
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	s.Set("a", time.Date(2025, 6, 2, 3, 0, 0, 0, time.UTC))
	if err := s.Save(); err == nil {
		t.Fatal("Save into a read-only directory succeeded")
	}
	s2, err := OpenState(dir)
	if err != nil || s2.Last("a").Day() != 1 {
		t.Errorf("after a failed Save: %v, last %v; want the old state", err, s2.Last("a"))
	}
}
