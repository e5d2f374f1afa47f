// pause: the sandbox ("infra") process of every pod on the real node. It holds
// the pod's namespaces open, reaps the zombies of processes that die in the
// pod's pid namespace (when it is shared), and exits on SIGTERM or SIGINT.
// Static, no dependencies: built by tests/cluster/images.sh (image `pause`).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for { // reap every child that has exited
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
