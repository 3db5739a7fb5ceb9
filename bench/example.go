package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNoExample is wrapped by FindExample's errors when the example or
// what it runs on is missing: the benchmark that needs it skips.
var ErrNoExample = errors.New("bench: the fastapi-scheduler example cannot run here")

// Example is examples/fastapi-scheduler: a FastAPI app served by uvicorn
// workers, its APScheduler as forkd's [[singleton]] (forkd.toml) or started
// in Gunicorn's master by on_starting (gunicorn.conf.py), and its job,
// which appends "<unix time> <pid> <how>" to $JOB_LOG on every run.
type Example struct {
	// Dir is the example's directory (absolute).
	Dir string
	// Root is the module root, forkd's working directory: the example's
	// forkd.toml names its directory relative to it.
	Root string
	// Python is the program the example's forkd.toml runs.
	Python string
	// Config is the example's forkd.toml.
	Config string
}

var (
	exampleBind    = regexp.MustCompile(`(?m)^bind = .*$`)
	exampleEvery   = regexp.MustCompile(`(?m)^every = "[^"]*"`)
	exampleJobEach = regexp.MustCompile(`JOB_EVERY = "[^"]*"`)
	exampleCommand = regexp.MustCompile(`(?m)^command = "([^"]+)"`)
	exampleWorkers = regexp.MustCompile(`(?m)^workers = \d+$`)
)

// FindExample finds the example under the module root root and checks that
// its python has uvicorn, fastapi and apscheduler; the error wraps
// ErrNoExample when something is missing.
func FindExample(root string) (Example, error) {
	e := Example{Root: root, Dir: filepath.Join(root, "examples", "fastapi-scheduler")}
	data, err := os.ReadFile(filepath.Join(e.Dir, "forkd.toml"))
	if err != nil {
		return Example{}, fmt.Errorf("%w: %v", ErrNoExample, err)
	}
	e.Config = string(data)
	for _, f := range []string{"app.py", "jobs.py", "scheduler.py", "gunicorn.conf.py"} {
		if _, err := os.Stat(filepath.Join(e.Dir, f)); err != nil {
			return Example{}, fmt.Errorf("%w: %v", ErrNoExample, err)
		}
	}
	m := exampleCommand.FindStringSubmatch(e.Config)
	if m == nil {
		return Example{}, fmt.Errorf("%w: no command in %s/forkd.toml", ErrNoExample, e.Dir)
	}
	e.Python = m[1]
	out, err := exec.Command(e.Python, "-c", "import uvicorn.workers, fastapi, apscheduler").CombinedOutput()
	if err != nil {
		return Example{}, fmt.Errorf("%w: %s cannot import uvicorn, fastapi and apscheduler "+
			"(apt-get install python3-uvicorn python3-fastapi python3-apscheduler): %v\n%s", ErrNoExample, e.Python, err, out)
	}
	return e, nil
}

// ForkdConfig returns the example's forkd.toml serving on 127.0.0.1:port,
// with its scheduler's JOB_EVERY and its [[schedule]]'s every set to every
// (whole seconds).
func (e Example) ForkdConfig(port int, every time.Duration) (string, error) {
	cfg := e.Config
	secs := strconv.Itoa(int(every / time.Second))
	for _, sub := range []struct {
		re   *regexp.Regexp
		with string
	}{
		{exampleBind, fmt.Sprintf(`bind = ["tcp://127.0.0.1:%d"]`, port)},
		{exampleEvery, `every = "` + secs + `s"`},
		{exampleJobEach, `JOB_EVERY = "` + secs + `"`},
	} {
		if !sub.re.MatchString(cfg) {
			return "", fmt.Errorf("%w: %s/forkd.toml has no line matching %s", ErrNoExample, e.Dir, sub.re)
		}
		cfg = sub.re.ReplaceAllLiteralString(cfg, sub.with)
	}
	return cfg, nil
}

// WithWorkers returns cfg, one of the example's forkd configs, with
// [server] workers set to n.
func WithWorkers(cfg string, n int) (string, error) {
	if !exampleWorkers.MatchString(cfg) {
		return "", fmt.Errorf("%w: the config has no line matching %s", ErrNoExample, exampleWorkers)
	}
	return exampleWorkers.ReplaceAllLiteralString(cfg, fmt.Sprintf("workers = %d", n)), nil
}

// GunicornArgs returns Gunicorn's arguments for the example with config
// file conf: 4 uvicorn workers (-k uvicorn.workers.UvicornWorker) of
// app:app on 127.0.0.1:port.
func (e Example) GunicornArgs(conf string, port int) []string {
	return e.GunicornArgsN(conf, port, 4)
}

// GunicornArgsN is GunicornArgs with n workers.
func (e Example) GunicornArgsN(conf string, port, n int) []string {
	return []string{"--config", conf, "--chdir", e.Dir, "--workers", fmt.Sprint(n),
		"--bind", fmt.Sprintf("127.0.0.1:%d", port), "-k", "uvicorn.workers.UvicornWorker", "app:app"}
}

// JobRun is one line of the example's JOB_LOG.
type JobRun struct {
	// At is when the job ran, by its own clock.
	At time.Time
	// PID is the process it ran in.
	PID int
	// How says who ran it: "singleton" (the singleton), "on_starting"
	// (Gunicorn's master), "in-app" (a worker), or "schedule" (forkd's
	// [[schedule]]).
	How string
}

// ReadJobLog reads the example's JOB_LOG at path; a missing file is no
// run at all, and a last line without its newline (being written) is left
// out.
func ReadJobLog(path string) ([]JobRun, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the job log: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	var runs []JobRun
	for _, line := range lines[:len(lines)-1] {
		fl := strings.Fields(line) // <time> <pid> <how> [<scheduled at>]
		if len(fl) < 3 {
			continue
		}
		secs, err1 := strconv.ParseFloat(fl[0], 64)
		pid, err2 := strconv.Atoi(fl[1])
		if err1 != nil || err2 != nil {
			continue
		}
		runs = append(runs, JobRun{At: time.Unix(0, int64(secs*1e9)), PID: pid, How: fl[2]})
	}
	return runs, nil
}

// CountJobRuns returns how many of runs were run by how in [from, to),
// and in how many distinct processes.
func CountJobRuns(runs []JobRun, how string, from, to time.Time) (n, pids int) {
	seen := map[int]bool{}
	for _, r := range runs {
		if r.How == how && !r.At.Before(from) && r.At.Before(to) {
			n++
			seen[r.PID] = true
		}
	}
	return n, len(seen)
}

// WaitAnswering sends GET / to 127.0.0.1:port from 8 clients at once, a
// new connection per request, until n distinct pids that are not in skip
// have answered with the example's {"pid": N, …}, or until timeout. It
// returns when the nth answered, and every pid that did.
func WaitAnswering(port, n int, skip map[int]bool, timeout time.Duration) (time.Time, map[int]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var mu sync.Mutex
	seen := map[int]bool{}
	var nth time.Time
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				pid, err := answeringPID(ctx, client, url)
				if err != nil {
					select { // not listening yet, or no worker: try again shortly
					case <-ctx.Done():
					case <-time.After(2 * time.Millisecond):
					}
					continue
				}
				mu.Lock()
				if !skip[pid] && !seen[pid] {
					seen[pid] = true
					if len(seen) == n {
						nth = time.Now()
						cancel()
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if nth.IsZero() {
		return nth, seen, fmt.Errorf("wait %v for %d new pids answering on port %d (%d did): %w", timeout, n, port,
			len(seen), ErrTimeout)
	}
	return nth, seen, nil
}

// answeringPID sends one GET to url and returns the pid in the answer.
func answeringPID(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		PID int `json:"pid"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.PID <= 0 {
		return 0, fmt.Errorf("GET %s: %s, pid %d, %v", url, resp.Status, body.PID, err)
	}
	return body.PID, nil
}
