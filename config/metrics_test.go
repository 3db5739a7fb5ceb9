package config

import (
	"strings"
	"testing"
)

func TestParse_metrics(t *testing.T) {
	const base = "[server]\nname = \"web\"\nbind = [\"tcp://127.0.0.1:8000\"]\n[worker]\ncommand = \"/bin/true\"\n"
	for _, tt := range []struct {
		name, table string
		want        Bind // zero: off
		err         string
	}{
		{name: "absent"},
		{name: "empty table", table: "[metrics]\n"},
		{name: "tcp", table: "[metrics]\nbind = \"tcp://127.0.0.1:9150\"\n",
			want: Bind{Raw: "tcp://127.0.0.1:9150", Network: "tcp", Address: "127.0.0.1:9150"}},
		{name: "unix with %i", table: "[metrics]\nbind = \"unix:/run/forkd/%i/metrics.sock?mode=0660\"\n",
			want: Bind{Raw: "unix:/run/forkd/%i/metrics.sock?mode=0660", Network: "unix", Address: "/run/forkd/web/metrics.sock", Mode: 0o660}},
		{name: "malformed", table: "[metrics]\nbind = \"127.0.0.1:9150\"\n",
			err: `7:8: metrics.bind: invalid bind "127.0.0.1:9150": it starts with neither "tcp://" nor "unix:"`},
		{name: "name option", table: "[metrics]\nbind = \"unix:/run/m.sock?name=m\"\n",
			err: "7:8: metrics.bind: \"unix:/run/m.sock?name=m\": option name= names a socket handed to the workers"},
		{name: "server's address", table: "[metrics]\nbind = \"tcp://127.0.0.1:8000\"\n",
			err: "7:8: metrics.bind: \"tcp://127.0.0.1:8000\" listens on the same address as server.bind's"},
		{name: "unknown key", table: "[metrics]\nlisten = \"tcp://127.0.0.1:9150\"\n",
			err: "7:1: metrics.listen"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("f.toml", []byte(base+tt.table))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse = %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Metrics.Bind != tt.want || cfg.Metrics.Enabled() != (tt.want.Network != "") {
				t.Errorf("metrics = %+v (enabled %v), want %+v", cfg.Metrics.Bind, cfg.Metrics.Enabled(), tt.want)
			}
		})
	}
}
