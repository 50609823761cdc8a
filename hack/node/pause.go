// The pod sandbox's process for hack/node.sh: it holds the pod's namespaces
// and does nothing else. It exits on SIGINT or SIGTERM and, as PID 1 of the
// sandbox, reaps whatever child is handed to it. Built static (CGO_ENABLED=0)
// by hack/build-node.sh into a FROM-scratch image, since no registry is
// reachable to pull one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
