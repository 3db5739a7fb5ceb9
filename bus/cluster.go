package bus

// EmitLeadershipAcquired queues a LeadershipAcquired signal: this forkd
// now holds the cluster singleton called name, with fencing token token.
// It never blocks.
func (b *Service) EmitLeadershipAcquired(name string, token uint64) {
	b.enqueue(queuedSignal{member: "LeadershipAcquired", body: []any{name, token}})
}

// EmitLeadershipLost queues a LeadershipLost signal: this forkd no longer
// holds the cluster singleton called name, for reason ("lease not
// renewed", "lease expired", "resigned", "stopped"). It never blocks.
func (b *Service) EmitLeadershipLost(name, reason string) {
	b.enqueue(queuedSignal{member: "LeadershipLost", body: []any{name, reason}})
}

// UpdateCluster records the connection to etcd for the Cluster property
// ("etcd connected", "etcd unreachable: …"; "" when the instance has no
// cluster); it never blocks. Run sends PropertiesChanged when it changed.
func (b *Service) UpdateCluster(state string) {
	b.cluster.Store(&state)
	select {
	case b.statusChanged <- struct{}{}:
	default:
	}
}
