package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A record is stored as a MessagePack array, which the Lua scripts read
// and write too (lua.go). Both sides write the narrowest integer and
// string forms, so a record packed in Go and one a script unpacked and
// packed again are equal byte for byte, and a rebuild's records equal the
// live ones whichever side wrote them last.

// value is one element of a packed record: a string, an integer or false
// (a hole that a script filled).
type value struct {
	s     string
	n     int64
	isNum bool
	hole  bool
}

func str(s string) value { return value{s: s} }
func num(n int64) value  { return value{n: n, isNum: true} }

func appendValue(b []byte, v value) []byte {
	switch {
	case v.hole:
		return append(b, 0xc2)
	case v.isNum:
		return appendInt(b, v.n)
	default:
		return appendStr(b, v.s)
	}
}

func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0 && n < 128:
		return append(b, byte(n))
	case n >= 0 && n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n >= 0 && n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
	case n >= 0 && n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	case n >= 0:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
	}
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= math.MaxUint8:
		b = append(b, 0xd9, byte(n))
	case n <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

func packValues(vs []value) string {
	b := make([]byte, 0, 160)
	if n := len(vs); n < 16 {
		b = append(b, 0x90|byte(n))
	} else {
		b = binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	}
	for _, v := range vs {
		b = appendValue(b, v)
	}
	return string(b)
}

var errPacked = errors.New("catalog: malformed record")

// unpackValues reads a packed record. Nil and false read as holes; floats
// (which the scripts never write for a record) are refused.
func unpackValues(s string) ([]value, error) {
	b := []byte(s)
	if len(b) == 0 {
		return nil, errPacked
	}
	var n int
	switch {
	case b[0]&0xf0 == 0x90:
		n, b = int(b[0]&0x0f), b[1:]
	case b[0] == 0xdc && len(b) >= 3:
		n, b = int(binary.BigEndian.Uint16(b[1:])), b[3:]
	default:
		return nil, errPacked
	}
	out := make([]value, 0, n)
	for i := 0; i < n; i++ {
		v, rest, err := readValue(b)
		if err != nil {
			return nil, fmt.Errorf("%w: element %d", err, i+1)
		}
		out = append(out, v)
		b = rest
	}
	if len(b) != 0 {
		return nil, errPacked
	}
	return out, nil
}

func readValue(b []byte) (value, []byte, error) {
	if len(b) == 0 {
		return value{}, nil, errPacked
	}
	need := func(k int) bool { return len(b) >= 1+k }
	c := b[0]
	switch {
	case c < 0x80:
		return num(int64(c)), b[1:], nil
	case c >= 0xe0:
		return num(int64(int8(c))), b[1:], nil
	case c&0xe0 == 0xa0:
		return readStr(b[1:], int(c&0x1f))
	case c == 0xc0 || c == 0xc2:
		return value{hole: true}, b[1:], nil
	case c == 0xcc && need(1):
		return num(int64(b[1])), b[2:], nil
	case c == 0xcd && need(2):
		return num(int64(binary.BigEndian.Uint16(b[1:]))), b[3:], nil
	case c == 0xce && need(4):
		return num(int64(binary.BigEndian.Uint32(b[1:]))), b[5:], nil
	case c == 0xcf && need(8):
		return num(int64(binary.BigEndian.Uint64(b[1:]))), b[9:], nil
	case c == 0xd0 && need(1):
		return num(int64(int8(b[1]))), b[2:], nil
	case c == 0xd1 && need(2):
		return num(int64(int16(binary.BigEndian.Uint16(b[1:])))), b[3:], nil
	case c == 0xd2 && need(4):
		return num(int64(int32(binary.BigEndian.Uint32(b[1:])))), b[5:], nil
	case c == 0xd3 && need(8):
		return num(int64(binary.BigEndian.Uint64(b[1:]))), b[9:], nil
	case c == 0xd9 && need(1):
		return readStr(b[2:], int(b[1]))
	case c == 0xda && need(2):
		return readStr(b[3:], int(binary.BigEndian.Uint16(b[1:])))
	case c == 0xdb && need(4):
		return readStr(b[5:], int(binary.BigEndian.Uint32(b[1:])))
	}
	return value{}, nil, errPacked
}

func readStr(b []byte, n int) (value, []byte, error) {
	if len(b) < n {
		return value{}, nil, errPacked
	}
	return str(string(b[:n])), b[n:], nil
}
