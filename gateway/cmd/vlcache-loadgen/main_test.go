package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestMainRefusesBadSettings(t *testing.T) {
	for name, args := range map[string][]string{
		"ratio not a number": {"-keep-ratios", "x"},
		"ratio out of range": {"-keep-ratios", "0"},
		"no target":          {"-gateway", ""},
		"no clients":         {"-clients", "0"},
		"unreachable triton": {"-gateway", "", "-triton", "127.0.0.1:18399", "-progress", "0"},
	} {
		t.Run(name, func(t *testing.T) {
			var out strings.Builder
			ctx, cancel := context.WithCancel(context.Background())
			if name == "unreachable triton" {
				cancel() // the readiness wait must end with the context, not hang
			}
			defer cancel()
			if err := Main(ctx, args, &out, io.Discard); err == nil {
				t.Fatalf("Main(%v) succeeded", args)
			}
		})
	}
}
