package config

import (
	"testing"
	"time"
)

// TestParse_autoscale: [server.autoscale] with its defaults, workers
// defaulting to min, and min = 0 allowing no worker at the start.
func TestParse_autoscale(t *testing.T) {
	const worker = "\n[worker]\ncommand = \"/bin/sh\"\n"
	t.Run("full", func(t *testing.T) {
		cfg, err := Parse("t.toml", []byte(`[server.autoscale]
min = 2
max = 16
queue = 4
up_after = "200ms"
down_after = "30s"
`+worker))
		if err != nil {
			t.Fatal(err)
		}
		want := Autoscale{On: true, Min: 2, Max: 16, Queue: 4,
			UpAfter: Duration{200 * time.Millisecond}, DownAfter: Duration{30 * time.Second}}
		if a := cfg.Server.Autoscale; a != want {
			t.Errorf("autoscale = %+v, want %+v", a, want)
		}
		if cfg.Server.Workers != 2 {
			t.Errorf("workers = %d, want min (2)", cfg.Server.Workers)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		cfg, err := Parse("t.toml", []byte("[server]\nworkers = 3\nautoscale.max = 8\n"+worker))
		if err != nil {
			t.Fatal(err)
		}
		want := Autoscale{On: true, Min: 1, Max: 8, Queue: 4,
			UpAfter: Duration{200 * time.Millisecond}, DownAfter: Duration{30 * time.Second}}
		if a := cfg.Server.Autoscale; a != want {
			t.Errorf("autoscale = %+v, want %+v", a, want)
		}
		if cfg.Server.Workers != 3 {
			t.Errorf("workers = %d, want 3", cfg.Server.Workers)
		}
	})
	t.Run("on demand", func(t *testing.T) {
		cfg, err := Parse("t.toml", []byte("[server.autoscale]\nmin = 0\nmax = 4\n"+worker))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Server.Workers != 0 || cfg.Server.Autoscale.Min != 0 {
			t.Errorf("workers, min = %d, %d; want 0, 0", cfg.Server.Workers, cfg.Server.Autoscale.Min)
		}
	})
	t.Run("off", func(t *testing.T) {
		cfg, err := Parse("t.toml", []byte(worker))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Server.Autoscale.On {
			t.Errorf("autoscale on without [server.autoscale]: %+v", cfg.Server.Autoscale)
		}
	})
}

// TestParse_autoscaleInvalid: bad [server.autoscale] values are errors at
// file:line:column.
func TestParse_autoscaleInvalid(t *testing.T) {
	const worker = "[worker]\ncommand = \"/bin/sh\"\n"
	tests := []struct {
		name, doc string
		want      []wantErr
	}{
		{"min above max", "[server.autoscale]\nmin = 8\nmax = 4\n" + worker,
			[]wantErr{{2, 7, "server.autoscale.min", "must not exceed max (4), got 8"}}},
		{"no max", "[server.autoscale]\nmin = 1\n" + worker,
			[]wantErr{{1, 1, "server.autoscale", "max is required"}}},
		{"max zero", "[server.autoscale]\nmax = 0\n" + worker,
			[]wantErr{{2, 7, "server.autoscale.max", "must be between 1 and 4096"}}},
		{"negative min", "[server.autoscale]\nmin = -1\nmax = 4\n" + worker,
			[]wantErr{{2, 7, "server.autoscale.min", "must be between 0 (on demand) and 4096"}}},
		{"bad up_after", "[server.autoscale]\nmax = 4\nup_after = \"soon\"\n" + worker,
			[]wantErr{{3, 12, "server.autoscale.up_after", `invalid duration "soon"`}}},
		{"number down_after", "[server.autoscale]\nmax = 4\ndown_after = 30\n" + worker,
			[]wantErr{{3, 14, "server.autoscale.down_after", `a duration string like "30s"`}}},
		{"zero down_after", "[server.autoscale]\nmax = 4\ndown_after = \"0s\"\n" + worker,
			[]wantErr{{3, 14, "server.autoscale.down_after", "must be more than 0s"}}},
		{"negative queue", "[server.autoscale]\nmax = 4\nqueue = -1\n" + worker,
			[]wantErr{{3, 9, "server.autoscale.queue", "must be 0"}}},
		{"workers outside", "[server]\nworkers = 9\n[server.autoscale]\nmax = 4\n" + worker,
			[]wantErr{{2, 11, "server.workers", "must be between min (1) and max (4), got 9"}}},
		{"workers 0 without min 0", "[server]\nworkers = 0\n[server.autoscale]\nmax = 4\n" + worker,
			[]wantErr{{2, 11, "server.workers", "must be between 1 and 4096, got 0"}}},
		{"unknown key", "[server.autoscale]\nmax = 4\nmaximum = 5\n" + worker,
			[]wantErr{{3, 1, "server.autoscale.maximum", "unknown key"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.doc))
			checkErrors(t, "t.toml", err, tt.want)
		})
	}
}
