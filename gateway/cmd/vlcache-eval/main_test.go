package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

func TestMainRefusesBadSettings(t *testing.T) {
	for name, args := range map[string][]string{
		"ratio not a number": {"-keep-ratios", "1,abc"},
		"ratio out of range": {"-keep-ratios", "1.5"},
		"unknown protocol":   {"-protocols", "P9"},
		"no policy":          {"-policies", ""},
		"missing data":       {"-data", "/nonexistent/eval.jsonl"},
		"stray argument":     {"extra"},
		"bad runner mode":    {"-model", "../../../testdata/tiny-llava-trained", "-runner-mode", "x", "-runner", "true", "-limit", "1"},
		"missing runner":     {"-model", "../../../testdata/tiny-llava-trained", "-runner", "/nonexistent/vlcache-run", "-limit", "1"},
	} {
		t.Run(name, func(t *testing.T) {
			var out strings.Builder
			if err := Main(context.Background(), args, &out, io.Discard); err == nil {
				t.Fatalf("Main(%v) succeeded", args)
			}
		})
	}
}

func TestSplitAndRatios(t *testing.T) {
	if got := splitList(" a, ,b,"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("splitList = %v", got)
	}
	r, err := parseRatios("1, 0.05")
	if err != nil || len(r) != 2 || r[1] != 0.05 {
		t.Fatalf("parseRatios = %v, %v", r, err)
	}
}
