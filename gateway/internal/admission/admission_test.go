package admission

import (
	"context"
	"errors"
	"testing"
)

func TestOpenAdmit(t *testing.T) {
	o := &Open{Default: KVSetting{KeepRatio: 1, Policy: "vlcache"}, Policies: []string{"full", "vlcache", "snapkv"}}
	ratio := func(r float64) *float64 { return &r }
	for _, tc := range []struct {
		name  string
		req   KVRequest
		want  KVSetting
		param string
	}{
		{"defaults", KVRequest{}, KVSetting{KeepRatio: 1, Policy: "vlcache"}, ""},
		{"ratio and policy", KVRequest{KeepRatio: ratio(0.1), Policy: "snapkv"}, KVSetting{KeepRatio: 0.1, Policy: "snapkv"}, ""},
		{"zero ratio", KVRequest{KeepRatio: ratio(0)}, KVSetting{}, "kv_cache.keep_ratio"},
		{"ratio above one", KVRequest{KeepRatio: ratio(1.01)}, KVSetting{}, "kv_cache.keep_ratio"},
		{"unknown policy", KVRequest{Policy: "magic"}, KVSetting{}, "kv_cache.policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := o.Admit(context.Background(), Request{Requested: tc.req})
			if tc.param != "" {
				var e *Error
				if !errors.As(err, &e) || e.Status != 400 || e.Param != tc.param {
					t.Fatalf("err = %v, want a 400 naming %s", err, tc.param)
				}
				return
			}
			if err != nil || g.KV() != tc.want || g.Tenant() != "default" || g.ChargePrompt(context.Background(), 10) != nil {
				t.Fatalf("grant %+v err %v", g, err)
			}
			g.Finish(context.Background(), Usage{Status: 200})
		})
	}
}
