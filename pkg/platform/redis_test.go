package platform

import (
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestRedisClientByURL: the scheme chooses a single-node or a cluster
// client; a cluster URL names every seed node and keeps its options.
func TestRedisClientByURL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		url     string
		cluster bool
		addrs   []string
		user    string
		bad     bool
	}{
		{url: "redis://127.0.0.1:6379/0", addrs: []string{"127.0.0.1:6379"}},
		{url: "redis-cluster://127.0.0.1:7001", cluster: true, addrs: []string{"127.0.0.1:7001"}},
		{url: "redis-cluster://ops:secret@10.0.0.1:7001,10.0.0.2:7002,10.0.0.3:7003?read_timeout=2s", cluster: true,
			addrs: []string{"10.0.0.1:7001", "10.0.0.2:7002", "10.0.0.3:7003"}, user: "ops"},
		{url: "rediss-cluster://10.0.0.1:7001,10.0.0.2:7002/0", cluster: true, addrs: []string{"10.0.0.1:7001", "10.0.0.2:7002"}},
		{url: "redis-cluster://10.0.0.1:7001/2", bad: true},
		{url: "redis-cluster://10.0.0.1:7001,,10.0.0.3:7003", bad: true},
		{url: "redis-cluster://", bad: true},
	}
	for _, tc := range cases {
		rdb, _, err := NewRedisClient(tc.url)
		if tc.bad {
			if err == nil {
				rdb.Close()
				t.Errorf("%s: accepted", tc.url)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		switch c := rdb.(type) {
		case *redis.ClusterClient:
			o := c.Options()
			if !tc.cluster || !slices.Equal(o.Addrs, tc.addrs) || o.Username != tc.user {
				t.Errorf("%s: cluster client on %v (user %q), want cluster %v on %v", tc.url, o.Addrs, o.Username, tc.cluster, tc.addrs)
			}
			if tc.url[:8] == "rediss-c" && o.TLSConfig == nil {
				t.Errorf("%s: no TLS", tc.url)
			}
		case *redis.Client:
			if tc.cluster || c.Options().Addr != tc.addrs[0] {
				t.Errorf("%s: single-node client on %s", tc.url, c.Options().Addr)
			}
		}
		rdb.Close()
	}
}
