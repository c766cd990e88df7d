package platform

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main is the whole of a command's main: run until SIGINT or SIGTERM ends
// the context, then exit 1 with the error, if any. Commands keep their own
// logic in run, which returns instead of exiting.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
