package activation_test

import (
	"fmt"
	"log"

	"github.com/forkd/forkd/activation"
	"github.com/forkd/forkd/config"
)

func ExampleListen() {
	// forkd was not socket-activated here, so it binds the config's address.
	binds := []config.Bind{{Raw: "tcp://127.0.0.1:0", Network: "tcp", Address: "127.0.0.1:0"}}
	socks, activated, err := activation.Listen(binds, 2048, "myapp")
	if err != nil {
		log.Fatal(err)
	}
	defer activation.Close(socks)
	fmt.Println("activated:", activated)
	// A worker gets socks[i].File as fd 3+i and these in its environment.
	fmt.Println(activation.Env(socks))
	// And it is started through the exec shim.
	fmt.Println(activation.ShimArgv("/usr/bin/forkd", "/usr/bin/myapp", []string{"--fd", "3"}))
	// Output:
	// activated: false
	// [LISTEN_FDS=1 LISTEN_FDNAMES=myapp]
	// [/usr/bin/forkd __forkd-exec-shim /usr/bin/myapp --fd 3]
}
