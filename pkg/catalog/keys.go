// Package catalog is the Redis index of media-bearing artifacts. Records
// are packed values in hashes bucketed by domain and UTC hour; a bitmap
// per domain and year says which hours hold records; a user's recordings
// are indexed per month, a call's by a hashed entry whose buckets double
// as the domain grows; ids are claimed globally in hashed buckets. Every
// key of a domain carries the hash tag {domain}, so a domain's keys share
// a cluster slot and one Lua script can change them atomically. The
// layout and what each part costs are in ARCHITECTURE.md.
package catalog

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"time"
)

// idBucketBits: ids are claimed in 2^idBucketBits hashes. Each stays in
// Redis's compact listpack encoding while it holds at most
// hash-max-listpack-entries ids (512 as deployments set it), so 65,536
// buckets stay compact up to about 33 million ids.
const idBucketBits = 16

// claimEpoch is the hour claim values count from: the Unix epoch (a
// message from a PBX with an unset clock is dated 1970-01-01).
const claimEpoch = 0

// Kind classes: recordings and messages have buckets of their own, so
// listing recordings never reads a message.
const (
	classRecording = "r"
	classMessage   = "m"
)

func classOf(kind string) string {
	if kind == KindRecording {
		return classRecording
	}
	return classMessage
}

type keys struct{ ns string }

func (k keys) tag(domain string) string { return k.ns + ":{" + domain + "}:" }

// bucket holds the records of a domain and class whose time falls in one
// UTC hour (hours since the Unix epoch): field = the id's 8-byte hash.
func (k keys) bucket(domain, class string, hour int64) string {
	return k.tag(domain) + "h:" + class + ":" + strconv.FormatInt(hour, 10)
}

// hours is the bitmap of the hours of one year that hold records of the
// class: bit = hours since the year began.
func (k keys) hours(domain, class string, year int) string {
	return k.tag(domain) + "hb:" + class + ":" + strconv.Itoa(year)
}

// years is the bitmap of the years (bit = year - 1970) whose hour bitmap
// of the class has a bit set: listing reads it to skip empty years.
func (k keys) years(domain, class string) string { return k.tag(domain) + "yb:" + class }

// userIndex is one user's recordings of one UTC month: member = the id's
// 8-byte hash, score = ms since the month began.
func (k keys) userIndex(domain, user string, month string) string {
	return k.tag(domain) + "u:" + user + ":" + month
}

// calls is one bucket of the call index at a level: field = the call id's
// 6-byte hash, value = the hours of its recordings, comma-separated.
func (k keys) calls(domain string, level int, bucket uint32) string {
	return k.tag(domain) + "c:" + strconv.Itoa(level) + ":" + strconv.FormatUint(uint64(bucket), 10)
}

// callCount counts the domain's recordings that entered the call index:
// it sets the level the next one enters.
func (k keys) callCount(domain string) string { return k.tag(domain) + "cn" }

// refused holds the domain's refusals (caps, ids another domain owns):
// field = the id's 8-byte hash, value = a short record with absolute
// times.
func (k keys) refused(domain string) string { return k.tag(domain) + "refused" }

func (k keys) usage(domain string) string { return k.tag(domain) + "usage" }
func (k keys) daily(domain string) string { return k.tag(domain) + "daily" }
func (k keys) holds(domain string) string { return k.tag(domain) + "holds" }

func (k keys) domains() string     { return k.ns + ":{domains}" }
func (k keys) domainMeta() string  { return k.ns + ":{domains}:meta" }
func (k keys) domainNum() string   { return k.ns + ":{domains}:num" }
func (k keys) domainName() string  { return k.ns + ":{domains}:name" }
func (k keys) domainCount() string { return k.ns + ":{domains}:seq" }

// claims is the bucket of the id registry an id hash falls in.
func (k keys) claims(h idHash) string {
	return k.ns + ":ids:{" + strconv.FormatUint(uint64(h.bucket), 10) + "}"
}

// absent stands in a script's KEYS for a key the artifact does not have
// (no user index, no call entry, no cap-tracking set): it is in the
// domain's slot, so the script still declares every key it may touch, and
// nothing ever writes it.
func (k keys) absent(domain string) string { return k.tag(domain) + "absent" }

// idHash is what an id is found by: the field of its record in its
// bucket, and the field and bucket of its claim.
type idHash struct {
	field  string // 8 bytes
	claim  string // 12 bytes
	bucket uint32
}

func hashID(id string) idHash {
	s := sha256.Sum256([]byte(id))
	return idHash{field: string(s[0:8]), claim: string(s[8:20]), bucket: binary.BigEndian.Uint32(s[20:24]) % (1 << idBucketBits)}
}

// callHash is a call id's field in the call index and the number its
// bucket is chosen by.
func callHash(callID string) (string, uint32) {
	s := sha256.Sum256([]byte(callID))
	return string(s[0:6]), binary.BigEndian.Uint32(s[6:10])
}

// callLevel is the level of the call index the n-th call entry of a
// domain (from 0) goes to: level L has 2^L buckets and takes the entries
// from 256*2^L (512 for level 0), so each bucket holds about 256.
func callLevel(n int64) int {
	l := 0
	for n >= 512 {
		n /= 2
		l++
	}
	return l
}

func (k keys) callKey(domain, callID string, level int) (key, field string) {
	f, b := callHash(callID)
	return k.calls(domain, level, b%(1<<level)), f
}

// monthOf names the UTC month of t, as the user index keys do.
func monthOf(t time.Time) string { return t.UTC().Format("200601") }

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// hourBit is the bitmap key and bit of an hour.
func (k keys) hourBit(domain, class string, hour int64) (string, int64) {
	t := time.Unix(hour*3600, 0).UTC()
	y := time.Date(t.Year(), 1, 1, 0, 0, 0, 0, time.UTC)
	return k.hours(domain, class, t.Year()), hour - y.Unix()/3600
}
