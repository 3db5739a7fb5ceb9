package etcd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// claimPeriod is a period as a schedule key's value starts with: Unix
// nanoseconds, zero-padded so that etcd's byte order is time order. A
// value is less than a period's claimPeriod exactly when it holds an
// earlier period (the member that follows sorts after the end of the
// string).
func claimPeriod(at time.Time) string {
	return fmt.Sprintf("%020d", at.UnixNano())
}

// claimValue is the value of a schedule's key: the claimed period, a
// space, the member that claimed it.
func claimValue(at time.Time, member string) string {
	return claimPeriod(at) + " " + member
}

// parseClaim splits a schedule key's value.
func parseClaim(v []byte) (at time.Time, member string, err error) {
	num, member, _ := strings.Cut(string(v), " ")
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("cluster: schedule key holds %q, not a claim", v)
	}
	return time.Unix(0, n), member, nil
}

// requestTimeout bounds one request to etcd on a caller's goroutine.
func (c *Cluster) requestTimeout() time.Duration {
	return min(c.ttl/2, 3*time.Second)
}

// Claim claims the period at of the schedule job for this forkd, with one
// etcd transaction (two the first time a schedule runs anywhere): it wins
// when the schedule's key holds an earlier period, or none. A period, or
// any earlier one, that another forkd claimed first is lost, and Holder
// says who. While there is no session it returns ErrUnavailable at once.
func (c *Cluster) Claim(ctx context.Context, job string, at time.Time) (Claim, error) {
	if !c.connected.Load() {
		return Claim{}, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout())
	defer cancel()
	key, v := c.key("schedule", job), claimValue(at, c.member)
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "<", claimPeriod(at))).
		Then(clientv3.OpPut(key, v)).Else(clientv3.OpGet(key)).Commit()
	if err == nil && !resp.Succeeded && len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		resp, err = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, v)).Else(clientv3.OpGet(key)).Commit()
	}
	if err != nil {
		return Claim{}, fmt.Errorf("cluster: claim %s at %s: %w", job, at.Format(time.RFC3339), err)
	}
	if resp.Succeeded {
		return Claim{Won: true, Holder: c.member, Token: resp.Header.Revision}, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return Claim{}, fmt.Errorf("cluster: claim %s: the key vanished meanwhile", job)
	}
	_, holder, _ := parseClaim(kvs[0].Value)
	return Claim{Holder: holder, Token: kvs[0].ModRevision}, nil
}

// Last returns the last period of the schedule job claimed by any forkd
// of the cluster (the zero Time if none), and who claimed it.
func (c *Cluster) Last(ctx context.Context, job string) (time.Time, string, error) {
	if !c.connected.Load() {
		return time.Time{}, "", ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout())
	defer cancel()
	resp, err := c.cli.Get(ctx, c.key("schedule", job))
	if err != nil {
		return time.Time{}, "", fmt.Errorf("cluster: last run of %s: %w", job, err)
	}
	if len(resp.Kvs) == 0 {
		return time.Time{}, "", nil
	}
	return parseClaim(resp.Kvs[0].Value)
}

// Holder returns the member that holds the singleton job ("" if none
// does).
func (c *Cluster) Holder(ctx context.Context, job string) (string, error) {
	if !c.connected.Load() {
		return "", ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout())
	defer cancel()
	resp, err := c.cli.Get(ctx, c.key("singleton", job)+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("cluster: holder of %s: %w", job, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
