package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
)

// A Sentinel deployment walcast cannot use as configured stops it at start
// with the reason and the fix, and no password: the Sentinels' password
// wrong, the primary's wrong, a master name the Sentinels do not monitor.
func TestSentinelConfigurationProblems(t *testing.T) {
	pw := testenv.WithRedisArgs("--requirepass", sentinelMasterPW, "--masterauth", sentinelMasterPW)
	primary := testenv.StartRedis(t, pw)
	s := testenv.StartSentinels(t, primary, 1, 1, 0, testenv.WithSentinelPassword(sentinelOwnPW))
	url := s.URL(sentinelMasterPW)
	for _, c := range []struct{ name, url, want string }{
		{"sentinel password", strings.Replace(url, sentinelOwnPW, "Wrong-sentinel-pw", 1), "sentinel_password="},
		{"primary password", strings.Replace(url, sentinelMasterPW, "Wrong-primary-pw", 1), "redis refused authentication"},
		{"master name", strings.Replace(url, "/walcast?", "/other?", 1), "monitor no master"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			code := realMainContext(ctx, []string{"serve", "--redis-url", c.url, "--jwt-secret", "s", "--listen", "127.0.0.1:0"}, &out, &errOut, func(string) string { return "" })
			text := errOut.String()
			if code != 1 || !strings.Contains(text, c.want) {
				t.Errorf("exit %d, stderr %q: want 1 and %q", code, text, c.want)
			}
			for _, secret := range []string{"Wrong-sentinel-pw", "Wrong-primary-pw", sentinelOwnPW, sentinelMasterPW} {
				if strings.Contains(text+out.String(), secret) {
					t.Errorf("the output shows a password: %s", text)
				}
			}
		})
	}
}
