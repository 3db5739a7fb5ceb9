package forkctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/forkd/forkd/bus"
	"github.com/forkd/forkd/metrics/status"
)

// statusFlags are status's options.
type statusFlags struct {
	json  bool
	watch bool
}

// watchEvery is how often status --watch refreshes.
const watchEvery = time.Second

// ANSI sequences status --watch writes: cursor home, erase to the end of
// the line, erase to the end of the screen.
const (
	ansiHome      = "\x1b[H"
	ansiClearLine = "\x1b[K"
	ansiClearDown = "\x1b[J"
)

// showStatus prints the status of the instance name once, or with watch
// redraws it in place every watchEvery until ctx is done (then nil): a
// screen that cannot be read shows why, and the next refresh tries again.
func showStatus(ctx context.Context, opts options, name string, f statusFlags, stdout io.Writer) error {
	if !f.watch {
		in, err := open(ctx, opts, name)
		if err != nil {
			return err
		}
		defer in.conn.Close()
		text, err := statusText(ctx, in, f.json, time.Now())
		if err != nil {
			return err
		}
		_, err = io.WriteString(stdout, text)
		return err
	}
	// One connection while it works; after an error, a new one at the
	// next refresh (the instance may have restarted).
	var in instance
	defer func() {
		if in.conn != nil {
			in.conn.Close()
		}
	}()
	fmt.Fprint(stdout, "\x1b[2J")
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	for {
		now := time.Now()
		var text string
		var err error
		if in.conn == nil {
			in, err = open(ctx, opts, name)
		}
		if err == nil {
			text, err = statusText(ctx, in, f.json, now)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			text = err.Error() + "\n"
			if in.conn != nil {
				in.conn.Close()
				in = instance{}
			}
		}
		if f.json {
			if _, err := io.WriteString(stdout, text); err != nil {
				return err
			}
		} else {
			header := fmt.Sprintf("Every %s: forkctl status%s    %s\n\n", watchEvery, nameArg(name), now.Format(time.TimeOnly))
			screen := strings.ReplaceAll(header+text, "\n", ansiClearLine+"\n")
			if _, err := io.WriteString(stdout, ansiHome+screen+ansiClearDown); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func nameArg(name string) string {
	if name == "" {
		return ""
	}
	return " " + name
}

// statusText renders the status of in at now, as text or, with asJSON, as
// its status page in indented JSON.
func statusText(ctx context.Context, in instance, asJSON bool, now time.Time) (string, error) {
	page, hasPage, err := details(ctx, in)
	if err != nil {
		return "", err
	}
	if asJSON {
		if !hasPage {
			return "", fmt.Errorf("%s: its forkd has no Details method (upgrade it for --json)", in.name)
		}
		b, err := json.MarshalIndent(page, "", "  ")
		if err != nil {
			return "", err
		}
		return string(b) + "\n", nil
	}
	props, err := properties(ctx, in)
	if err != nil {
		return "", err
	}
	var s struct {
		State          string
		Generation     uint64
		Workers        uint32
		ReadyWorkers   uint32
		DroppedSignals uint64
	}
	for key, dst := range map[string]any{"State": &s.State, "Generation": &s.Generation,
		"Workers": &s.Workers, "ReadyWorkers": &s.ReadyWorkers, "DroppedSignals": &s.DroppedSignals} {
		v, ok := props[key]
		if !ok {
			return "", fmt.Errorf("read the status of %s: no %s property", in.name, key)
		}
		if err := v.Store(dst); err != nil {
			return "", fmt.Errorf("read the status of %s: property %s: %w", in.name, key, err)
		}
	}
	// Listeners is newer than the other properties: a master without it
	// shows none. The status page has them too, with their addresses.
	var listeners []bus.ListenerEntry
	if v, ok := props["Listeners"]; ok && !hasPage {
		if err := v.Store(&listeners); err != nil {
			return "", fmt.Errorf("read the status of %s: property Listeners: %w", in.name, err)
		}
	}
	jobLines, err := jobCounts(ctx, in)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	w := tabwriter.NewWriter(&out, 0, 0, 1, ' ', 0)
	where := in.busName
	if in.socket != "" {
		where = in.socket
	}
	fmt.Fprintf(w, "Instance:\t%s\t(%s)\n", in.name, where)
	fmt.Fprintf(w, "State:\t%s\n", s.State)
	fmt.Fprintf(w, "Generation:\t%d\n", s.Generation)
	if hasPage {
		fmt.Fprintf(w, "Uptime:\t%s\t(since %s)\n", seconds(page.Uptime), page.Started.Local().Format(time.DateTime))
	}
	fmt.Fprintf(w, "Workers:\t%d/%d ready\n", s.ReadyWorkers, s.Workers)
	for _, l := range listeners {
		fmt.Fprintf(w, "Listener %s:\t%s, queue %d/%d\n", l.Name, l.Address, l.Queue, l.Backlog)
	}
	if hasPage {
		fmt.Fprintf(w, "Reloads:\t%d%s\n", page.Reloads, lastReload(page.LastReload, now))
	}
	for _, l := range jobLines {
		fmt.Fprintf(w, "%s:\t%s\n", l[0], l[1])
	}
	if c, ok := props["Cluster"].Value().(string); ok && c != "" {
		fmt.Fprintf(w, "Cluster:\t%s\n", c) // the connection to etcd of an instance with [cluster]
	}
	fmt.Fprintf(w, "Dropped signals:\t%d\n", s.DroppedSignals)
	if err := w.Flush(); err != nil {
		return "", err
	}
	if hasPage {
		writeTables(&out, page)
	}
	return out.String(), nil
}

// details calls the Details method; ok is false for a master without it.
func details(ctx context.Context, in instance) (page status.Page, ok bool, err error) {
	var text string
	err = in.object().CallWithContext(ctx, bus.Interface+".Details", 0).Store(&text)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.UnknownMethod" {
		return page, false, nil
	}
	if err != nil {
		return page, false, callError("read the details of", in, err)
	}
	if err := json.Unmarshal([]byte(text), &page); err != nil {
		return page, false, fmt.Errorf("read the details of %s: %w", in.name, err)
	}
	return page, true, nil
}

// lastReload says how the last reload ended, after the reload count.
func lastReload(r *status.Reload, now time.Time) string {
	if r == nil {
		return ""
	}
	s := fmt.Sprintf(", last %s %s ago", r.Result, seconds(now.Sub(r.At).Seconds()))
	if r.Error != "" {
		s += ": " + r.Error
	}
	return s
}

// writeTables writes the listeners and the workers of page.
func writeTables(out io.Writer, page status.Page) {
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "LISTENER\tNAME\tQUEUE\tBACKLOG")
	for _, l := range page.Listeners {
		if l.Error != "" {
			fmt.Fprintf(w, "%s\t%s\t?\t?\t(%s)\n", l.Address, l.Name, l.Error)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", l.Address, l.Name, l.Queue, l.Backlog)
	}
	_ = w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "SLOT\tPID\tGEN\tSTATE\tAGE\tREQUESTS\tP50\tP99\tRSS\tCPU\tHEARTBEAT")
	for _, wk := range page.WorkerList {
		beat := "-"
		if wk.HeartbeatAge >= 0 {
			beat = seconds(wk.HeartbeatAge) + " ago"
		}
		fmt.Fprintf(w, "%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", wk.Slot, wk.PID, wk.Generation, wk.State,
			seconds(wk.Age), wk.Requests, latency(wk.P50), latency(wk.P99), sizeText(wk.RSS),
			fmt.Sprintf("%.2fs", wk.CPU), beat)
	}
	_ = w.Flush()
}

// seconds formats a duration in seconds for people: 850ms, 12s, 5m3s,
// 2h4m, 3d4h.
func seconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	days := int(d / (24 * time.Hour))
	return fmt.Sprintf("%dd%dh", days, int((d-time.Duration(days)*24*time.Hour)/time.Hour))
}

// latency formats a latency quantile, or "-" when none is known.
func latency(q *float64) string {
	if q == nil {
		return "-"
	}
	d := time.Duration(*q * float64(time.Second))
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// sizeText formats a size in bytes in binary units; "-" for 0 (unknown).
func sizeText(n uint64) string {
	switch {
	case n == 0:
		return "-"
	case n < 1<<20:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
}
