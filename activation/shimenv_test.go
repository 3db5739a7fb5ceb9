package activation

import (
	"errors"
	"strings"
	"testing"
)

func TestShimEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      []string
		want     string // joined with spaces
		wantKeep int
		wantErr  error
		errMatch string
	}{
		{
			name:     "no sockets, no watchdog",
			env:      []string{"PATH=/bin", "HOME=/root"},
			want:     "PATH=/bin HOME=/root",
			wantKeep: 3,
		},
		{
			name:     "sockets and watchdog",
			env:      []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=a:b", "LISTEN_PID=1", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1", "FORKD_SHIM_PARENT=10"},
			want:     "LISTEN_FDS=2 LISTEN_FDNAMES=a:b WATCHDOG_USEC=30000000 LISTEN_PID=42 WATCHDOG_PID=42",
			wantKeep: 5,
		},
		{
			name:     "setup: pid variables and fds named",
			env:      []string{"LISTEN_FDS=2", "MY_PID=1", "WATCHDOG_USEC=1", "FORKD_SHIM_PIDENV=MY_PID,LISTEN_PID", "FORKD_SHIM_FDS=4", "FORKD_SHIM_STATUS=4"},
			want:     "LISTEN_FDS=2 WATCHDOG_USEC=1 MY_PID=42 LISTEN_PID=42",
			wantKeep: 4,
		},
		{
			name:     "setup: no pid variables",
			env:      []string{"LISTEN_FDS=1", "LISTEN_PID=7", "FORKD_SHIM_PIDENV=", "FORKD_SHIM_FDS=0"},
			want:     "LISTEN_FDS=1 LISTEN_PID=7",
			wantKeep: 0,
		},
		{
			name:     "LISTEN_FDS=0 still gets LISTEN_PID",
			env:      []string{"LISTEN_FDS=0"},
			want:     "LISTEN_FDS=0 LISTEN_PID=42",
			wantKeep: 3,
		},
		{
			name:     "pids left alone without what they describe",
			env:      []string{"LISTEN_PID=7", "WATCHDOG_PID=7"},
			want:     "LISTEN_PID=7 WATCHDOG_PID=7",
			wantKeep: 3,
		},
		{
			name:    "master gone",
			env:     []string{"FORKD_SHIM_PARENT=11", "LISTEN_FDS=1"},
			wantErr: ErrMasterGone,
		},
		{
			name:     "bad parent",
			env:      []string{"FORKD_SHIM_PARENT=x"},
			errMatch: "FORKD_SHIM_PARENT",
		},
		{
			name:     "bad FORKD_SHIM_FDS",
			env:      []string{"FORKD_SHIM_FDS=x"},
			errMatch: "FORKD_SHIM_FDS",
		},
		{
			name:     "bad LISTEN_FDS",
			env:      []string{"LISTEN_FDS=-1"},
			errMatch: "LISTEN_FDS",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, keep, err := shimEnv(tc.env, 42, 10)
			switch {
			case tc.wantErr != nil || tc.errMatch != "":
				if err == nil || !errors.Is(err, tc.wantErr) && tc.wantErr != nil || !strings.Contains(err.Error(), tc.errMatch) {
					t.Fatalf("shimEnv = %q, %v; want an error wrapping %v containing %q", got, err, tc.wantErr, tc.errMatch)
				}
			case err != nil:
				t.Fatalf("shimEnv: %v", err)
			default:
				if s := strings.Join(got, " "); s != tc.want || keep != tc.wantKeep {
					t.Errorf("shimEnv = %q, fds 0…%d kept; want %q, 0…%d", s, keep-1, tc.want, tc.wantKeep-1)
				}
			}
		})
	}
}
