package platform_test

import (
	"context"
	"strings"
	"testing"

	"github.com/callvault/callvault/pkg/platform"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://:s3cret-pw@127.0.0.1:6379/0", "redis://:xxxxx@127.0.0.1:6379/0"},
		{"rediss://default:s3cret-pw@cache.example:6380/1", "rediss://default:xxxxx@cache.example:6380/1"},
		{"nats://app:s3cret-pw@a:4222,nats://app:s3cret-pw@b:4222", "nats://app:xxxxx@a:4222,nats://app:xxxxx@b:4222"},
		{"nats://s3cret-pw@a:4222", "nats://xxxxx@a:4222"},
		{"redis://:s3cret pw%zz@host:1/0", "redis://xxxxx"},
	} {
		if got := platform.RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Connection errors quote the URL without its password, even when the URL
// does not parse (the parser's own error quotes it whole).
func TestConnectErrorsHidePasswords(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := platform.ConnectRedis(ctx, "redis://:s3cret-pw%zz@127.0.0.1:1/0")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("redis parse error: %v", err)
	}
	_, err = platform.ConnectRedis(ctx, "redis://:s3cret-pw@127.0.0.1:1/0")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("redis connect error: %v", err)
	}
	_, _, err = platform.ConnectNATS(ctx, "nats://app:s3cret-pw@127.0.0.1:1", "test", slogDiscard())
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("nats connect error: %v", err)
	}
}
