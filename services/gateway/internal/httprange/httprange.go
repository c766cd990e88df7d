// Package httprange parses a single-range HTTP Range header (RFC 9110).
package httprange

import (
	"errors"
	"strconv"
	"strings"
)

// ErrUnsatisfiable means the range lies outside the representation: the
// answer is 416 with Content-Range: bytes */size.
var ErrUnsatisfiable = errors.New("range not satisfiable")

// Range is an inclusive byte range.
type Range struct {
	Start, End int64
}

// Length is the number of bytes in r.
func (r Range) Length() int64 { return r.End - r.Start + 1 }

// Parse interprets header against a representation of size bytes. ok is
// false when the whole representation should be sent: no header, a header
// that is not a single byte range, or a malformed one (which RFC 9110 says
// to ignore).
func Parse(header string, size int64) (r Range, ok bool, err error) {
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return Range{}, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return Range{}, false, nil
	}
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return Range{}, false, nil
		}
		if n == 0 || size == 0 {
			return Range{}, false, ErrUnsatisfiable
		}
		if n > size {
			n = size
		}
		return Range{Start: size - n, End: size - 1}, true, nil
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return Range{}, false, nil
	}
	end := size - 1
	if last != "" {
		end, err = strconv.ParseInt(last, 10, 64)
		if err != nil || end < start {
			return Range{}, false, nil
		}
		if end > size-1 {
			end = size - 1
		}
	}
	if start >= size {
		return Range{}, false, ErrUnsatisfiable
	}
	return Range{Start: start, End: end}, true, nil
}
