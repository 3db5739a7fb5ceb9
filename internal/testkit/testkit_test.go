package testkit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/forkd/forkd/internal/testkit"
)

func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{
		// notify sends its arguments, one datagram each, to NOTIFY_SOCKET
		// and exits with the code in NOTIFY_EXIT.
		"notify": func(args []string) int {
			c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			for _, a := range args {
				c.Write([]byte(a))
			}
			fmt.Println("sent", len(args))
			var code int
			fmt.Sscan(os.Getenv("NOTIFY_EXIT"), &code)
			return code
		},
		// sleep waits for a signal.
		"sleep": func([]string) int { select {} },
	})
}

func TestCommand_RoleEnvWordsComeFirst(t *testing.T) {
	n := testkit.ListenNotify(t)
	cmd := testkit.Command(t, "notify READY=1", "STATUS=up")
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+n.Path, "NOTIFY_EXIT=3")
	var exitErr *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("the notify role: %v, want exit code 3", err)
	}
	notes := n.Flush()
	if len(notes) != 2 || !notes[0].Has("READY=1") || notes[1].Text != "STATUS=up" {
		t.Fatalf("notes %+v, want READY=1 then STATUS=up", notes)
	}
	if v, ok := notes[1].Field("STATUS"); !ok || v != "up" {
		t.Errorf("Field(STATUS) = %q, %v", v, ok)
	}
	if notes[0].PID != int32(cmd.Process.Pid) {
		t.Errorf("sender pid %d, want %d", notes[0].PID, cmd.Process.Pid)
	}
	if _, ok := n.Within(0); ok {
		t.Error("a note after Flush took them all")
	}
}

func TestCleanEnv(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/nowhere")
	t.Setenv("FORKD_WORKER_ID", "3")
	t.Setenv("GORACE", "halt_on_error=1")
	env := strings.Join(testkit.CleanEnv(), "\n") + "\n"
	for _, gone := range []string{"NOTIFY_SOCKET=", "FORKD_WORKER_ID="} {
		if strings.Contains(env, gone) {
			t.Errorf("CleanEnv has %s", gone)
		}
	}
	if !strings.Contains(env, "GORACE=halt_on_error=1 atexit_sleep_ms=0\n") {
		t.Errorf("CleanEnv's GORACE is not the test's with atexit_sleep_ms=0")
	}
}

func TestWorker(t *testing.T) {
	w := testkit.StartWorker(t, testkit.WorkerSpec{Role: "notify", Args: []string{"READY=1"}})
	w.Notify.Wait("READY=1")
	w.WaitExit(0)
	if !w.Exited() {
		t.Error("Exited() = false after WaitExit")
	}
	if got := w.Stdout.WaitFor(t, "sent"); got != "sent 1" {
		t.Errorf("stdout line %q, want %q", got, "sent 1")
	}
	if _, err := net.Dial("tcp", w.Addr); err == nil {
		t.Errorf("%s accepts connections with its only worker gone", w.Addr)
	}
}

func TestExited(t *testing.T) {
	w := testkit.StartWorker(t, testkit.WorkerSpec{Role: "sleep"})
	exited := testkit.Exited(t, w.Cmd.Process.Pid)
	select {
	case <-exited:
		t.Fatal("Exited closed for a running process")
	case <-time.After(50 * time.Millisecond): // a running process stays running
	}
	w.Signal(syscall.SIGKILL)
	testkit.WaitExit(t, w.Cmd.Process.Pid, testkit.Deadline)
	select {
	case <-exited:
	case <-time.After(testkit.Deadline):
		t.Fatal("Exited not closed after the process was killed")
	}
}

func TestBuffer_WaitFor(t *testing.T) {
	var b testkit.Buffer
	go func() {
		fmt.Fprint(&b, "one\ntwo ")
		fmt.Fprint(&b, "three\n")
	}()
	if got := b.WaitFor(t, "three"); got != "two three" {
		t.Errorf("WaitFor = %q, want %q", got, "two three")
	}
}

func TestRun(t *testing.T) {
	ran := make(chan struct{})
	stop := testkit.Run(t, func(ctx context.Context) error {
		close(ran)
		<-ctx.Done()
		return nil
	})
	<-ran
	stop()
	stop()
}
