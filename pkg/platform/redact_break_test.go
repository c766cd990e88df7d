package platform_test

import (
	"context"
	"strings"
	"testing"

	"github.com/callvault/callvault/pkg/platform"
)

// TestBreakRedactURLPasswordWithDelimiter guards a defect an attack found (fixed): a password holding a
// URL delimiter ("/", "?", "#") after a run of digits is printed whole. The
// URL still parses, but as host "default" with port "2024" and no user, so
// RedactURL finds no password and returns the URL unchanged, and
// ConnectRedis's error quotes it (and go-redis's own error quotes the rest
// of the password). The banner and logs print the same string.
func TestBreakRedactURLPasswordWithDelimiter(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{
		"redis://default:2024/Secret@cache.example:6379",
		"redis://default:9?Secret@127.0.0.1:1/0",
		"redis://:1234#Secret@127.0.0.1:1",
		"redis-cluster://default:12/Secret@127.0.0.1:1,127.0.0.1:2",
	} {
		if got := platform.RedactURL(raw); strings.Contains(got, "Secret") {
			t.Errorf("RedactURL(%q) = %q: the password is shown", raw, got)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := platform.ConnectRedis(ctx, raw); err != nil && strings.Contains(err.Error(), "Secret") {
			t.Errorf("ConnectRedis(%q) error quotes the password: %v", raw, err)
		}
	}
}
