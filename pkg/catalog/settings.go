package catalog

import (
	"context"
	"fmt"
	"strconv"
)

// EncodingSettings are the listpack limits the catalog's memory figures
// assume (deploy/redis/redis.conf).
var EncodingSettings = map[string]int64{
	"hash-max-listpack-entries": 512,
	"hash-max-listpack-value":   256,
	"zset-max-listpack-entries": 1024,
}

// CheckEncoding reads the server's listpack limits and describes each one
// below what the catalog's layout assumes: such a Redis works, but keeps
// the catalog in two to three times the memory. A server that does not
// answer CONFIG GET (managed services often refuse it) is not judged.
func (c *Catalog) CheckEncoding(ctx context.Context) []string {
	var low []string
	for name, want := range EncodingSettings {
		m, err := c.rdb.ConfigGet(ctx, name).Result()
		if err != nil {
			return nil
		}
		v, ok := m[name]
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n < want {
			low = append(low, fmt.Sprintf("%s is %d, the catalog is laid out for %d", name, n, want))
		}
	}
	return low
}
