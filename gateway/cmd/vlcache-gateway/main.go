// Command vlcache-gateway serves the OpenAI chat API in front of tritonserver.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vlcache/vlcache/gateway/internal/tenant"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "tenants" {
		// Operator subcommand: manage tenants and keys (gateway/internal/tenant).
		err = tenant.RunCLI(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = Main(ctx, os.Args[1:], os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vlcache-gateway:", err)
		os.Exit(1)
	}
}
