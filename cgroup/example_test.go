package cgroup_test

import (
	"fmt"

	"github.com/forkd/forkd/cgroup"
)

// Open finds the subtree systemd delegated to forkd; outside such a unit
// it says what is missing, and forkd runs its workers in its own cgroup.
func ExampleOpen() {
	tree, err := cgroup.Open()
	if err != nil {
		fmt.Println("no cgroup per worker:", err != nil)
		return
	}
	if err := tree.Setup(); err != nil { // forkd into <unit>/master, controllers on
		fmt.Println(err)
		return
	}
	g, err := tree.New("worker-0.g1.1", cgroup.Limits{MemoryMax: 512 << 20, PidsMax: 64})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Close()
	fmt.Println("start the worker with process.Attr.Cgroup =", g.Dir().Name())
}
