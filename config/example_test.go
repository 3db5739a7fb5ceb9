package config_test

import (
	"fmt"

	"github.com/forkd/forkd/config"
)

func ExampleLoad() {
	cfg, err := config.Load("testdata/example.toml")
	if err != nil {
		fmt.Println(err)
		return
	}
	s := cfg.Server
	fmt.Println("instance:", s.Name)
	fmt.Println("workers:", s.Workers, "ready after:", s.MinReady)
	for _, b := range s.Bind {
		fmt.Printf("bind: %s %s mode=%#o name=%q\n", b.Network, b.Address, b.Mode, b.Name)
	}
	fmt.Println("timeout:", s.Timeout, "graceful:", s.GracefulTimeout, "kill:", s.KillTimeout)
	fmt.Println("worker:", cfg.Worker.Path, cfg.Worker.Args, cfg.Worker.Ready)
	for _, h := range cfg.Hooks["on_starting"] {
		fmt.Println("on_starting:", h.Exec, h.Timeout, h.OnFailure)
	}
	// Output:
	// instance: example
	// workers: 4 ready after: 0
	// bind: tcp 127.0.0.1:8000 mode=0 name=""
	// bind: unix /run/myapp/admin.sock mode=0660 name="admin"
	// timeout: 1m0s graceful: 30s kill: 5s
	// worker: /bin/sh [-c exec myapp] notify
	// on_starting: [/usr/bin/logger myapp starting] 30s abort
}

func ExampleParse_errors() {
	_, err := config.Parse("demo.toml", []byte(`[server]
workers = 0
timeout = "30 seconds"
wrokers = 2

[worker]
command = "/bin/sh"
`))
	fmt.Println(err)
	for _, e := range config.Errors(err) {
		fmt.Printf("line %d, column %d: %s\n", e.Line, e.Col, e.Key)
	}
	// Output:
	// demo.toml:2:11: server.workers: must be between 1 and 4096, got 0
	// demo.toml:3:11: server.timeout: invalid duration "30 seconds" (write e.g. "30s")
	// demo.toml:4:1: server.wrokers: unknown key (did you mean "workers"?)
	// line 2, column 11: server.workers
	// line 3, column 11: server.timeout
	// line 4, column 1: server.wrokers
}

func ExampleParseSize() {
	for _, s := range []string{"512M", "1G", "65536", "1.5G"} {
		v, err := config.ParseSize(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(s, "=", int64(v), "bytes =", v)
	}
	// Output:
	// 512M = 536870912 bytes = 512M
	// 1G = 1073741824 bytes = 1G
	// 65536 = 65536 bytes = 64K
	// invalid size "1.5G" (write bytes, or a whole number of K, M, G or T, each 1024 times the one before, e.g. "512M")
}
