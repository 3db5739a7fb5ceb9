// Command forkd-cluster is forkd's sidecar for jobs with scope =
// "cluster": it holds the etcd session, the elections and the claims for
// the forkd master that starts it, over the socket it gets on fd 3 (see
// package cluster/etcd). forkd starts it only when its config has a
// [cluster] table and cluster jobs; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/forkd/forkd/cluster/etcd"
)

func main() { os.Exit(etcd.Main()) }
