// Package catalog is the Redis index of media-bearing artifacts: one hash
// per artifact, time indexes per (domain, kind) and per user, a set per
// call, usage counters per domain, and the id -> domain index. Every key of
// a domain carries the hash tag {domain}, so a domain's keys share a
// cluster slot and one Lua script can change them atomically.
package catalog

import (
	"fmt"
	"hash/fnv"
)

// idBuckets spreads the id -> domain index over many keys (and so over
// cluster slots) instead of one huge hash.
const idBuckets = 1024

type keys struct{ ns string }

func (k keys) artifact(domain, id string) string { return k.ns + ":{" + domain + "}:art:" + id }
func (k keys) index(domain, kind string) string  { return k.ns + ":{" + domain + "}:idx:" + kind }
func (k keys) userIndex(domain, user, kind string) string {
	return k.ns + ":{" + domain + "}:user:" + user + ":" + kind
}
func (k keys) call(domain, callID string) string { return k.ns + ":{" + domain + "}:call:" + callID }
func (k keys) usage(domain string) string        { return k.ns + ":{" + domain + "}:usage" }
func (k keys) daily(domain string) string        { return k.ns + ":{" + domain + "}:daily" }
func (k keys) domains() string                   { return k.ns + ":{domains}" }
func (k keys) domainMeta() string                { return k.ns + ":{domains}:meta" }
func (k keys) ids(id string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return fmt.Sprintf("%s:ids:{%04d}", k.ns, h.Sum32()%idBuckets)
}

func (k keys) holds(domain string) string { return k.ns + ":{" + domain + "}:holds" }

// absent stands in a script's KEYS for a key the artifact does not have
// (no user index, no call set, no cap-tracking set): it is in the
// domain's slot, so the script still declares every key it may touch, and
// nothing ever writes it, so removing from it is a no-op. (The artifact's
// own hash cannot stand in: ZREM or SREM on a hash is an error.)
func (k keys) absent(domain string) string { return k.ns + ":{" + domain + "}:absent" }
