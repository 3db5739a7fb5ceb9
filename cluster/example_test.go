package cluster_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/forkd/forkd/cluster"
	"github.com/forkd/forkd/config"
)

// A forkd's membership: run it, lead a singleton, claim a schedule's
// period. (Compiled, not run: it needs forkd-cluster and an etcd.)
func Example() {
	cfg := config.Default()
	cfg.Server.Name = "web1"
	cfg.Cluster = config.Cluster{Endpoints: []string{"http://127.0.0.1:2379"}, Name: "shop"}
	c, err := cluster.New(cluster.Options{Config: cfg})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()

	events := make(chan cluster.Event, 8)
	c.Lead("scheduler", events)
	if ev := <-events; ev.Acquired {
		fmt.Println("start the scheduler with FORKD_FENCING_TOKEN =", ev.Token)
	}

	<-c.Ready()
	due := time.Now().Truncate(time.Minute)
	if claim, err := c.Claim(ctx, "cleanup", due); err == nil && claim.Won {
		fmt.Println("run cleanup for", due)
	}
}
