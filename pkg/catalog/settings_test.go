package catalog_test

import (
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// TestCheckEncoding names a listpack limit set below the layout's, and
// judges nothing on a server that does not answer CONFIG GET.
func TestCheckEncoding(t *testing.T) {
	ns := testenv.Namespace(t)
	rdb := testenv.Redis(t, ns)
	c := catalog.New(rdb, ns)
	ctx := ctxT(t)
	if low := c.CheckEncoding(ctx); len(low) != 0 {
		t.Fatalf("the test server is set as deployments are, yet: %v", low)
	}
	old, err := rdb.ConfigGet(ctx, "hash-max-listpack-value").Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.ConfigSet(ctxT(t), "hash-max-listpack-value", old["hash-max-listpack-value"]) })
	if err := rdb.ConfigSet(ctx, "hash-max-listpack-value", "64").Err(); err != nil {
		t.Fatal(err)
	}
	low := c.CheckEncoding(ctx)
	if len(low) != 1 || !strings.Contains(low[0], "hash-max-listpack-value is 64") {
		t.Fatalf("CheckEncoding = %v, want hash-max-listpack-value named", low)
	}
	m := miniredis.RunT(t)
	if low := catalog.New(redis.NewClient(&redis.Options{Addr: m.Addr()}), ns).CheckEncoding(ctx); low != nil {
		t.Fatalf("a server without CONFIG GET was judged: %v", low)
	}
}
