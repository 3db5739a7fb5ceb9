package exporter

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/forkd/forkd/metrics"
)

// goFamily is one of the go_* families that the library's Go collector
// exports: its name, help and type.
type goFamily struct {
	name, help string
	kind       dto.MetricType
}

// goFamilies lists the families of the library's default Go collector, as
// it exports them in this process: the go_* families forkd exports about
// its master, with the master's values.
func goFamilies() ([]goFamily, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	fams := make([]goFamily, 0, len(mfs))
	for _, mf := range mfs {
		fams = append(fams, goFamily{name: mf.GetName(), help: mf.GetHelp(), kind: mf.GetType()})
	}
	return fams, nil
}

// exportGo sends the families fams with the values of rt: go_info (its
// version label), go_gc_duration_seconds (a summary of the GC pauses) and
// the families of one sample that rt.Values holds; a family rt has no value
// for is left out.
func exportGo(ch chan<- prometheus.Metric, fams []goFamily, rt metrics.Runtime) {
	for _, f := range fams {
		switch f.name {
		case "go_info":
			d := prometheus.NewDesc(f.name, f.help, []string{"version"}, nil)
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, 1, rt.GoVersion)
		case "go_gc_duration_seconds":
			if len(rt.GCPauses) != len(metrics.GCQuantiles) {
				continue
			}
			q := make(map[float64]float64, len(rt.GCPauses))
			for i, v := range rt.GCPauses {
				q[metrics.GCQuantiles[i]] = v
			}
			d := prometheus.NewDesc(f.name, f.help, nil, nil)
			ch <- prometheus.MustNewConstSummary(d, rt.GCCount, rt.GCPauseTotal, q)
		default:
			v, ok := rt.Values[f.name]
			if !ok {
				continue
			}
			t := prometheus.GaugeValue
			if f.kind == dto.MetricType_COUNTER {
				t = prometheus.CounterValue
			}
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(f.name, f.help, nil, nil), t, v)
		}
	}
}
