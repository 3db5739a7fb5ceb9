package jobs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// StateFile is the name of the state file in the state directory.
const StateFile = "schedules.json"

// ErrCorruptState is wrapped by OpenState's warning when the state file
// could not be decoded.
var ErrCorruptState = errors.New("jobs: corrupt state file")

// stateVersion is the version of the state file's format.
const stateVersion = 1

// stateDoc is the state file's content:
//
//	{"version": 1, "last_run": {"cleanup": "2025-06-01T03:00:00Z"}}
type stateDoc struct {
	Version int                  `json:"version"`
	LastRun map[string]time.Time `json:"last_run"`
}

// State holds the last-run times of persistent schedules, by schedule name,
// kept in StateFile in a state directory ([server] state_dir, or systemd's
// StateDirectory=). A State is owned by one goroutine: it is not safe for
// concurrent use.
type State struct {
	dir  string
	last map[string]time.Time
}

// OpenState reads the state file in dir. It always returns a usable State;
// a non-nil error is a warning to log, and the State then starts empty:
//
//   - no file (or no dir) is no error: nothing ran yet;
//   - a file that cannot be decoded is moved aside to StateFile+".corrupt"
//     (replacing an older one) and the error wraps ErrCorruptState;
//   - a file that cannot be read (permissions, a directory) is left alone,
//     and the next Save tries to replace it.
func OpenState(dir string) (*State, error) {
	s := &State{dir: dir, last: map[string]time.Time{}}
	path := s.Path()
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return s, fmt.Errorf("read schedule state (starting without last-run times): %w", err)
	}
	var doc stateDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err = dec.Decode(&doc)
	switch {
	case err != nil:
	case dec.More():
		err = errors.New("trailing data after the JSON object")
	case doc.Version != stateVersion:
		err = fmt.Errorf("version %d, want %d", doc.Version, stateVersion)
	}
	if err != nil {
		aside := path + ".corrupt"
		where := "moved to " + aside
		if rerr := os.Rename(path, aside); rerr != nil {
			where = "cannot move it aside: " + rerr.Error()
		}
		return s, fmt.Errorf("%w %s: %v (%s; starting without last-run times)", ErrCorruptState, path, err, where)
	}
	for name, t := range doc.LastRun {
		if !t.IsZero() {
			s.last[name] = t
		}
	}
	return s, nil
}

// Path returns the state file's path.
func (s *State) Path() string {
	return filepath.Join(s.dir, StateFile)
}

// Last returns the ScheduledAt of the schedule's last recorded run, or the
// zero Time if none is recorded.
func (s *State) Last(name string) time.Time {
	return s.last[name]
}

// Set records t as the ScheduledAt of the schedule's last run (the zero
// Time forgets it). It changes only memory; Save writes the file.
func (s *State) Set(name string, t time.Time) {
	if t.IsZero() {
		delete(s.last, name)
		return
	}
	s.last[name] = t.UTC()
}

// Names returns the names with a recorded run, sorted.
func (s *State) Names() []string {
	names := make([]string, 0, len(s.last))
	for name := range s.last {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Save writes the state file atomically: to a temporary file in the same
// directory, synced, renamed over the old one, and the directory synced, so
// that after a crash the file holds either the old state or the new one.
// It creates the directory (mode 0700) if it is missing.
func (s *State) Save() error {
	data, err := json.MarshalIndent(stateDoc{Version: stateVersion, LastRun: s.last}, "", "  ")
	if err != nil {
		return fmt.Errorf("save schedule state: %w", err)
	}
	data = append(data, '\n')
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("save schedule state: %w", err)
	}
	if err := writeAtomic(s.Path(), data); err != nil {
		return fmt.Errorf("save schedule state: %w", err)
	}
	return nil
}

// writeAtomic replaces path with a file holding data (mode 0600), durably.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
