package cgroup

import (
	"fmt"
	"os"
	"testing"

	"github.com/forkd/forkd/internal/testkit"
)

// TestMain lets the test binary play forkd's master in its own cgroup
// (role "setup DIR"): it calls Setup on the tree at DIR, which moves it
// into DIR's leaf master, and prints its cgroup.
func TestMain(m *testing.M) {
	testkit.Main(m, testkit.Roles{"setup": func(args []string) int {
		tree, err := TreeAt(args[0])
		if err == nil {
			err = tree.Setup()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cg, err := Of(os.Getpid())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(cg)
		return 0
	}})
}
