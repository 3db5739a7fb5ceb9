package etcd

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errLeaseGone reports that etcd answered a keep-alive with no lease: it
// expired or was revoked.
var errLeaseGone = errors.New("lease expired")

// sessionLease is the client's Lease for concurrency.Session: its
// KeepAlive keeps nothing alive, the Cluster's own keepAlive does. A
// session's lease is then renewed on one stream, at the Cluster's pace,
// and each renewal is known by when its request was sent, the instant
// from which the lease holds for lease_ttl at least.
type sessionLease struct{ clientv3.Lease }

// KeepAlive returns a channel that closes when ctx is done.
func (sessionLease) KeepAlive(ctx context.Context, _ clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ch := make(chan *clientv3.LeaseKeepAliveResponse)
	context.AfterFunc(ctx, func() { close(ch) })
	return ch, nil
}

// keepInterval is how often the lease is renewed: often enough that
// several renewals in a row must fail before the lease is given up
// (lease_ttl − stop_margin without one).
func (c *Cluster) keepInterval() time.Duration {
	return max(min(c.ttl/5, (c.ttl-c.margin)/3), 50*time.Millisecond)
}

// keepAlive renews lease id on one LeaseKeepAlive stream every
// keepInterval until ctx is done, sending on renewed the time each
// answered request was sent, and on gone the end of the lease (answered
// with no TTL). A broken stream is opened again.
func (c *Cluster) keepAlive(ctx context.Context, id clientv3.LeaseID, renewed chan<- time.Time, gone chan<- error) {
	tick := time.NewTicker(c.keepInterval())
	defer tick.Stop()
	for ctx.Err() == nil {
		conn := c.cli.ActiveConnection()
		sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		stream, err := pb.NewLeaseClient(conn).LeaseKeepAlive(sctx)
		if err != nil {
			cancel()
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
			continue
		}
		sent := make(chan time.Time, 64) // send times, in the stream's order
		broken := make(chan struct{})
		go func() {
			defer close(broken)
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				var t time.Time
				select {
				case t = <-sent:
				default:
					continue // an answer to nothing this loop sent
				}
				if resp.TTL <= 0 {
					select {
					case gone <- errLeaseGone:
					case <-ctx.Done():
					}
					return
				}
				select {
				case renewed <- t:
				case <-ctx.Done():
					return
				}
			}
		}()
		send := func() bool {
			select {
			case sent <- time.Now():
			default:
				return false // 64 unanswered: the stream is stuck
			}
			return stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}) == nil
		}
		ok := send()
		for ok {
			select {
			case <-tick.C:
				ok = send()
			case <-broken:
				ok = false
			case <-ctx.Done():
				ok = false
			}
		}
		cancel()
		<-broken
	}
}
