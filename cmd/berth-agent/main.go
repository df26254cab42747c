// Command berth-agent runs the berth Session Manager agent on a desktop host.
// This is a first skeleton: the configuration and the broker link follow.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("berth-agent", version)
		return
	}
	fmt.Fprintln(os.Stderr, "berth-agent: not implemented yet")
	os.Exit(1)
}
