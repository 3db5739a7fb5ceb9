package etcd_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/cluster/etcd"
	"github.com/forkd/forkd/config"
	"github.com/forkd/forkd/internal/testkit"
)

// testTimeout bounds every wait.
const testTimeout = 15 * time.Second

// member is one forkd's membership, running until the test ends or stop.
type member struct {
	c      *etcd.Cluster
	events chan cluster.Event
	status chan cluster.Status
	stop   func()
}

// join makes and runs a Cluster named name reaching etcd at endpoint.
func join(t *testing.T, endpoint, name string, ttl time.Duration) *member {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Name = name
	cfg.Cluster = config.Cluster{Endpoints: []string{endpoint}, Name: "shop", LeaseTTL: config.Duration{Duration: ttl}}
	m := &member{events: make(chan cluster.Event, 16), status: make(chan cluster.Status, 64)}
	c, err := etcd.New(etcd.Options{Config: cfg, Member: name,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnStatus: func(s cluster.Status) {
			select {
			case m.status <- s:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	m.c = c
	m.stop = testkit.Run(t, c.Run)
	return m
}

// testWriter logs to t.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// next returns m's next leadership event, failing after testTimeout.
func (m *member) next(t *testing.T) cluster.Event {
	t.Helper()
	select {
	case ev := <-m.events:
		return ev
	case <-time.After(testTimeout):
		t.Fatal("no leadership event")
		return cluster.Event{}
	}
}

// TestCluster_Lead: one of two members leads; when it stops, the other
// takes over with a larger token; Holder names the leader.
func TestCluster_Lead(t *testing.T) {
	etcd := testkit.StartEtcd(t)
	proxy := testkit.StartProxy(t, etcd.Dial)
	ep := "http://" + proxy.Addr
	a := join(t, ep, "a", 2*time.Second)
	a.c.Lead("scheduler", a.events)
	first := a.next(t)
	if !first.Acquired || first.Token <= 0 {
		t.Fatalf("a's first event %+v, want acquired with a token", first)
	}
	b := join(t, ep, "b", 2*time.Second)
	b.c.Lead("scheduler", b.events)
	<-b.c.Ready()
	if h, err := b.c.Holder(context.Background(), "scheduler"); err != nil || h != "a" {
		t.Fatalf("Holder = %q, %v; want a", h, err)
	}
	a.stop() // revokes its lease
	second := b.next(t)
	if !second.Acquired || second.Token <= first.Token {
		t.Fatalf("b's event %+v, want acquired with a token above %d", second, first.Token)
	}
}

// TestCluster_Claim: of several members claiming the same period, one
// wins; an earlier period is lost once a later one was claimed; Last
// returns the latest.
func TestCluster_Claim(t *testing.T) {
	etcd := testkit.StartEtcd(t)
	proxy := testkit.StartProxy(t, etcd.Dial)
	ep := "http://" + proxy.Addr
	ms := []*member{join(t, ep, "a", 2*time.Second), join(t, ep, "b", 2*time.Second), join(t, ep, "c", 2*time.Second)}
	for _, m := range ms {
		<-m.c.Ready()
	}
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var lastToken int64
	for p := range 5 {
		at := base.Add(time.Duration(p) * time.Second)
		results := make(chan cluster.Claim, len(ms))
		for _, m := range ms {
			go func() {
				c, err := m.c.Claim(ctx, "cleanup", at)
				if err != nil {
					t.Error(err)
				}
				results <- c
			}()
		}
		won, holder := 0, ""
		for range ms {
			c := <-results
			if c.Won {
				won++
				holder = c.Holder
				if c.Token <= lastToken {
					t.Errorf("period %d: token %d not above %d", p, c.Token, lastToken)
				}
				lastToken = c.Token
			}
		}
		if won != 1 {
			t.Fatalf("period %d won by %d members, want 1", p, won)
		}
		last, who, err := ms[0].c.Last(ctx, "cleanup")
		if err != nil || !last.Equal(at) || who != holder {
			t.Fatalf("Last = %v %q %v, want %v %q", last, who, err, at, holder)
		}
	}
	if c, err := ms[1].c.Claim(ctx, "cleanup", base); err != nil || c.Won {
		t.Fatalf("claim of an earlier period: %+v, %v; want lost", c, err)
	}
}

// TestCluster_Unreachable: with no etcd behind the endpoint, Run keeps
// trying, the status says unreachable, and claims fail at once with
// ErrUnavailable.
func TestCluster_Unreachable(t *testing.T) {
	dir := t.TempDir()
	proxy := testkit.StartProxy(t, func() (net.Conn, error) { return net.Dial("unix", filepath.Join(dir, "nothing")) })
	m := join(t, "http://"+proxy.Addr, "a", 2*time.Second)
	deadline := time.After(testTimeout)
	for {
		select {
		case s := <-m.status:
			if s.State != cluster.StateUnreachable {
				continue
			}
			if !strings.HasPrefix(s.String(), "etcd unreachable: ") {
				t.Errorf("status text %q", s)
			}
			if _, err := m.c.Claim(context.Background(), "x", time.Now()); !errors.Is(err, cluster.ErrUnavailable) {
				t.Errorf("Claim while unreachable: %v, want ErrUnavailable", err)
			}
			return
		case <-deadline:
			t.Fatal("no unreachable status")
		}
	}
}

// TestNew_badTLS: TLS files that cannot be used are an error from New,
// naming the key.
func TestNew_badTLS(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Cluster = config.Cluster{Endpoints: []string{"https://127.0.0.1:2379"}, CA: bad}
	_, err := etcd.New(etcd.Options{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "cluster.ca") || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("New with a bad CA: %v", err)
	}
}
