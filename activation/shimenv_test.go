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
		wantFDs  int
		wantErr  error
		errMatch string
	}{
		{
			name: "no sockets, no watchdog",
			env:  []string{"PATH=/bin", "HOME=/root"},
			want: "PATH=/bin HOME=/root",
		},
		{
			name:    "sockets and watchdog",
			env:     []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=a:b", "LISTEN_PID=1", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1", "FORKD_SHIM_PARENT=10"},
			want:    "LISTEN_FDS=2 LISTEN_FDNAMES=a:b WATCHDOG_USEC=30000000 LISTEN_PID=42 WATCHDOG_PID=42",
			wantFDs: 2,
		},
		{
			name: "LISTEN_FDS=0 still gets LISTEN_PID",
			env:  []string{"LISTEN_FDS=0"},
			want: "LISTEN_FDS=0 LISTEN_PID=42",
		},
		{
			name: "pids left alone without what they describe",
			env:  []string{"LISTEN_PID=7", "WATCHDOG_PID=7"},
			want: "LISTEN_PID=7 WATCHDOG_PID=7",
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
			name:     "bad LISTEN_FDS",
			env:      []string{"LISTEN_FDS=-1"},
			errMatch: "LISTEN_FDS",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, nfds, err := shimEnv(tc.env, 42, 10)
			switch {
			case tc.wantErr != nil || tc.errMatch != "":
				if err == nil || !errors.Is(err, tc.wantErr) && tc.wantErr != nil || !strings.Contains(err.Error(), tc.errMatch) {
					t.Fatalf("shimEnv = %q, %v; want an error wrapping %v containing %q", got, err, tc.wantErr, tc.errMatch)
				}
			case err != nil:
				t.Fatalf("shimEnv: %v", err)
			default:
				if s := strings.Join(got, " "); s != tc.want || nfds != tc.wantFDs {
					t.Errorf("shimEnv = %q, %d fds; want %q, %d", s, nfds, tc.want, tc.wantFDs)
				}
			}
		})
	}
}
