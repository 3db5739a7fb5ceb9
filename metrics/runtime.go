package metrics

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// ReadRuntime reads this process's Go runtime statistics: the values of
// the go_* families, as Prometheus' client reads them in the process it
// runs in.
func ReadRuntime() Runtime {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	threads, _ := runtime.ThreadCreateProfile(nil)
	v := map[string]float64{
		"go_goroutines":                    float64(runtime.NumGoroutine()),
		"go_threads":                       float64(threads),
		"go_memstats_alloc_bytes":          float64(ms.Alloc),
		"go_memstats_alloc_bytes_total":    float64(ms.TotalAlloc),
		"go_memstats_sys_bytes":            float64(ms.Sys),
		"go_memstats_mallocs_total":        float64(ms.Mallocs),
		"go_memstats_frees_total":          float64(ms.Frees),
		"go_memstats_heap_alloc_bytes":     float64(ms.HeapAlloc),
		"go_memstats_heap_sys_bytes":       float64(ms.HeapSys),
		"go_memstats_heap_idle_bytes":      float64(ms.HeapIdle),
		"go_memstats_heap_inuse_bytes":     float64(ms.HeapInuse),
		"go_memstats_heap_released_bytes":  float64(ms.HeapReleased),
		"go_memstats_heap_objects":         float64(ms.HeapObjects),
		"go_memstats_stack_inuse_bytes":    float64(ms.StackInuse),
		"go_memstats_stack_sys_bytes":      float64(ms.StackSys),
		"go_memstats_mspan_inuse_bytes":    float64(ms.MSpanInuse),
		"go_memstats_mspan_sys_bytes":      float64(ms.MSpanSys),
		"go_memstats_mcache_inuse_bytes":   float64(ms.MCacheInuse),
		"go_memstats_mcache_sys_bytes":     float64(ms.MCacheSys),
		"go_memstats_buck_hash_sys_bytes":  float64(ms.BuckHashSys),
		"go_memstats_gc_sys_bytes":         float64(ms.GCSys),
		"go_memstats_other_sys_bytes":      float64(ms.OtherSys),
		"go_memstats_next_gc_bytes":        float64(ms.NextGC),
		"go_memstats_last_gc_time_seconds": float64(ms.LastGC) / 1e9,
	}
	samples := []rtmetrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"},
		{Name: "/sched/gomaxprocs:threads"}}
	rtmetrics.Read(samples)
	for i, name := range []string{"go_gc_gogc_percent", "go_gc_gomemlimit_bytes", "go_sched_gomaxprocs_threads"} {
		if samples[i].Value.Kind() == rtmetrics.KindUint64 {
			v[name] = float64(samples[i].Value.Uint64())
		}
	}
	gc := debug.GCStats{PauseQuantiles: make([]time.Duration, len(GCQuantiles))}
	debug.ReadGCStats(&gc)
	rt := Runtime{GoVersion: runtime.Version(), Values: v, GCCount: uint64(gc.NumGC),
		GCPauseTotal: gc.PauseTotal.Seconds()}
	for _, d := range gc.PauseQuantiles {
		rt.GCPauses = append(rt.GCPauses, d.Seconds())
	}
	return rt
}
