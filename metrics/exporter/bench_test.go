package exporter

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/forkd/forkd/metrics"
)

// BenchmarkScrape is forkd-metrics' work for one scrape of a master with
// 64 workers: decoding the master's answer, reading its process_*, and
// encoding every family for promhttp.
func BenchmarkScrape(b *testing.B) {
	line, err := json.Marshal(answerOf(b, 64))
	if err != nil {
		b.Fatal(err)
	}
	gos, err := goFamilies()
	if err != nil {
		b.Fatal(err)
	}
	ask := func(context.Context) (metrics.Answer, error) {
		var a metrics.Answer
		err := json.Unmarshal(line, &a)
		return a, err
	}
	h := Handler(Registry(ask, gos, os.Getpid()))
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}
