package exporter

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/forkd/forkd/metrics"
	"github.com/forkd/forkd/metrics/metricstest"
	"github.com/forkd/forkd/workers"
)

// answerOf returns this process's answer as a master with a recorder of n
// workers (each this process) gives it.
func answerOf(t testing.TB, n int) metrics.Answer {
	t.Helper()
	r := metrics.New(metrics.Options{Instance: "web", Version: "1.0"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	r.SetPool(metricstest.Pool{N: n})
	r.Requests(workers.RequestReport{PID: os.Getpid(), Stats: "2;1000;1,1"})
	p, err := r.Page(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return metrics.Answer{ID: 1, Page: p, Runtime: metrics.ReadRuntime()}
}

// TestCollector_Lint checks every family against Prometheus' naming
// conventions (the library's linter, as promtool check metrics runs it).
func TestCollector_Lint(t *testing.T) {
	gos, err := goFamilies()
	if err != nil {
		t.Fatal(err)
	}
	c := collector{ask: answering(answerOf(t, 3)), gos: gos}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	n, err := testutil.GatherAndCount(reg, "forkd_workers", "forkd_worker_heartbeat_age_seconds")
	if err != nil {
		t.Fatal(err)
	}
	// 3 states, and one series per slot: the fake pool's 3 workers.
	if n != 3+3 {
		t.Errorf("forkd_workers and heartbeat series: %d, want 6", n)
	}
}

// TestCollector_GoFamilies: the go_* families made of a master's Runtime
// are the library's Go collector's, with the same names, help, types and
// labels, and values of the master's (here this process's).
func TestCollector_GoFamilies(t *testing.T) {
	lib := prometheus.NewRegistry()
	lib.MustRegister(collectors.NewGoCollector())
	want, err := lib.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gos, err := goFamilies()
	if err != nil {
		t.Fatal(err)
	}
	ours := prometheus.NewRegistry()
	ours.MustRegister(collector{ask: answering(answerOf(t, 1)), gos: gos})
	got, err := ours.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var wantNames, gotNames []string
	for _, mf := range want {
		wantNames = append(wantNames, mf.GetName()+" "+mf.GetType().String()+" "+mf.GetHelp()+" "+labelsOf(mf.GetMetric()[0].GetLabel()))
	}
	for _, mf := range got {
		if strings.HasPrefix(mf.GetName(), "go_") {
			gotNames = append(gotNames, mf.GetName()+" "+mf.GetType().String()+" "+mf.GetHelp()+" "+labelsOf(mf.GetMetric()[0].GetLabel()))
		}
	}
	if !slices.Equal(gotNames, wantNames) {
		t.Errorf("go_* families:\n%s\nthe library's:\n%s", strings.Join(gotNames, "\n"), strings.Join(wantNames, "\n"))
	}
	for _, mf := range got {
		if mf.GetName() == "go_goroutines" && mf.GetMetric()[0].GetGauge().GetValue() < 1 {
			t.Errorf("go_goroutines = %v", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
}

func labelsOf(ls []*dto.LabelPair) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.GetName())
	}
	return strings.Join(s, ",")
}

// answering returns an ask that answers a.
func answering(a metrics.Answer) func(context.Context) (metrics.Answer, error) {
	return func(context.Context) (metrics.Answer, error) { return a, nil }
}
