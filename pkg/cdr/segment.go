package cdr

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

// A segment object is
//
//	"CVSEG1\n" | header length (uint32, big endian) | header (JSON) | body
//
// The body is a run of blocks, each one zstd frame of length-delimited
// protobuf Cdr messages. Records are sorted by (started_at, id) across
// the whole segment, so readers merge segments without sorting, duplicate
// copies of one CDR sit next to each other, and a reader going backwards
// reads one block at a time from the end. The header says what a reader
// or an index rebuild needs without the body: counts, time bounds, each
// block's place and SHA-256, and the segments a compaction replaced.
const segmentMagic = "CVSEG1\n"

// SegmentVersion is the format version headers carry.
const SegmentVersion = 1

// DefaultBlockCDRs is how many CDRs go in one block.
const DefaultBlockCDRs = 2048

// maxHeader bounds a header a reader accepts.
const maxHeader = 16 << 20

// BlockInfo places one block in the body.
type BlockInfo struct {
	// Offset is from the start of the body.
	Offset int64 `json:"off"`
	Length int64 `json:"len"`
	Count  int   `json:"n"`
	// MinStart and MaxStart bound the started_at of its CDRs (Unix ns).
	MinStart int64  `json:"min"`
	MaxStart int64  `json:"max"`
	SHA256   string `json:"sha256"`
}

// Header describes a segment.
type Header struct {
	Version  int    `json:"version"`
	Domain   string `json:"domain"`
	Day      string `json:"day"`
	Count    int    `json:"count"`
	MinStart int64  `json:"min_start"`
	MaxStart int64  `json:"max_start"`
	// BodyBytes and BodySHA256 are of the whole body.
	BodyBytes  int64       `json:"body_bytes"`
	BodySHA256 string      `json:"body_sha256"`
	Blocks     []BlockInfo `json:"blocks"`
	// Supersedes names the segments of the partition this one replaced
	// (a compaction): an index rebuild drops them.
	Supersedes []string  `json:"supersedes,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(256<<20))
)

// Less orders CDRs as segments keep them: by start, then id.
func Less(a, b *cdrv1.Cdr) int {
	if c := cmp.Compare(startNanos(a), startNanos(b)); c != 0 {
		return c
	}
	return cmp.Compare(a.GetId(), b.GetId())
}

func startNanos(c *cdrv1.Cdr) int64 { return c.GetStartedAt().AsTime().UnixNano() }

// Builder writes a segment's body block by block to w, in order: Add
// refuses a CDR that sorts before the previous one.
type Builder struct {
	w         io.Writer
	blockCDRs int
	h         Header
	body      hashCounter
	pending   []byte
	pendingN  int
	blockMin  int64
	blockMax  int64
	last      *cdrv1.Cdr
	scratch   []byte
}

type hashCounter struct {
	sum interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

// NewBuilder starts a segment of domain's day whose body goes to w.
func NewBuilder(w io.Writer, domain, day string, blockCDRs int) *Builder {
	if blockCDRs <= 0 {
		blockCDRs = DefaultBlockCDRs
	}
	return &Builder{
		w: w, blockCDRs: blockCDRs,
		h:    Header{Version: SegmentVersion, Domain: domain, Day: day},
		body: hashCounter{sum: sha256.New()},
	}
}

// Add appends c.
func (b *Builder) Add(c *cdrv1.Cdr) error {
	if b.last != nil && Less(b.last, c) > 0 {
		return fmt.Errorf("segment %s/%s: CDR %s added out of order", b.h.Domain, b.h.Day, c.GetId())
	}
	b.last = c
	var err error
	if b.scratch, err = (proto.MarshalOptions{Deterministic: true}).MarshalAppend(b.scratch[:0], c); err != nil {
		return fmt.Errorf("segment: marshal CDR %s: %w", c.GetId(), err)
	}
	b.pending = protowire.AppendVarint(b.pending, uint64(len(b.scratch)))
	b.pending = append(b.pending, b.scratch...)
	at := startNanos(c)
	if b.pendingN == 0 {
		b.blockMin = at
	}
	b.blockMax = at
	b.pendingN++
	if b.pendingN >= b.blockCDRs {
		return b.flushBlock()
	}
	return nil
}

func (b *Builder) flushBlock() error {
	if b.pendingN == 0 {
		return nil
	}
	frame := zenc.EncodeAll(b.pending, nil)
	sum := sha256.Sum256(frame)
	if _, err := b.w.Write(frame); err != nil {
		return fmt.Errorf("segment: write block: %w", err)
	}
	_, _ = b.body.sum.Write(frame)
	if len(b.h.Blocks) == 0 {
		b.h.MinStart = b.blockMin
	}
	b.h.MaxStart = b.blockMax
	b.h.Blocks = append(b.h.Blocks, BlockInfo{
		Offset: b.body.n, Length: int64(len(frame)), Count: b.pendingN,
		MinStart: b.blockMin, MaxStart: b.blockMax, SHA256: hex.EncodeToString(sum[:]),
	})
	b.body.n += int64(len(frame))
	b.h.Count += b.pendingN
	b.pending, b.pendingN = b.pending[:0], 0
	return nil
}

// Finish writes the last block and returns the header.
func (b *Builder) Finish(supersedes []string, now time.Time) (Header, error) {
	if err := b.flushBlock(); err != nil {
		return Header{}, err
	}
	b.h.BodyBytes = b.body.n
	b.h.BodySHA256 = hex.EncodeToString(b.body.sum.Sum(nil))
	b.h.Supersedes = supersedes
	b.h.CreatedAt = now.UTC()
	return b.h, nil
}

// Prefix is what goes before the body: the magic, the header's length and
// the header.
func Prefix(h Header) ([]byte, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("segment header: %w", err)
	}
	out := make([]byte, 0, len(segmentMagic)+4+len(js))
	out = append(out, segmentMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(js)))
	return append(out, js...), nil
}

// Encode builds a whole segment in memory from cdrs (sorted here). It
// answers the object bytes and the header.
func Encode(domain, day string, cdrs []*cdrv1.Cdr, blockCDRs int, now time.Time) ([]byte, Header, error) {
	slices.SortFunc(cdrs, Less)
	var body bytes.Buffer
	b := NewBuilder(&body, domain, day, blockCDRs)
	for _, c := range cdrs {
		if err := b.Add(c); err != nil {
			return nil, Header{}, err
		}
	}
	h, err := b.Finish(nil, now)
	if err != nil {
		return nil, Header{}, err
	}
	prefix, err := Prefix(h)
	if err != nil {
		return nil, Header{}, err
	}
	return append(prefix, body.Bytes()...), h, nil
}

// ErrNotSegment is a read of something that is not a segment object.
var ErrNotSegment = errors.New("not a CDR segment")

// HeaderProbe is how many bytes to read first to find a header; a longer
// header says how much more it needs.
const HeaderProbe = 64 << 10

// ParseHeader reads a header from the start of a segment object, given at
// least its first bytes. It answers the header and where the body starts,
// or need > 0: how many bytes from the start it must be given.
func ParseHeader(start []byte) (h Header, bodyOffset int64, need int64, err error) {
	if len(start) < len(segmentMagic)+4 {
		if len(start) >= len(segmentMagic) && string(start[:len(segmentMagic)]) != segmentMagic {
			return Header{}, 0, 0, ErrNotSegment
		}
		return Header{}, 0, int64(len(segmentMagic) + 4), nil
	}
	if string(start[:len(segmentMagic)]) != segmentMagic {
		return Header{}, 0, 0, ErrNotSegment
	}
	n := int64(binary.BigEndian.Uint32(start[len(segmentMagic):]))
	if n > maxHeader {
		return Header{}, 0, 0, fmt.Errorf("%w: header of %d bytes", ErrNotSegment, n)
	}
	end := int64(len(segmentMagic)+4) + n
	if int64(len(start)) < end {
		return Header{}, 0, end, nil
	}
	if err := json.Unmarshal(start[len(segmentMagic)+4:end], &h); err != nil {
		return Header{}, 0, 0, fmt.Errorf("%w: header: %v", ErrNotSegment, err)
	}
	if h.Version != SegmentVersion {
		return Header{}, 0, 0, fmt.Errorf("%w: version %d", ErrNotSegment, h.Version)
	}
	var off int64
	for i, b := range h.Blocks {
		if b.Offset != off || b.Length <= 0 || b.Count <= 0 {
			return Header{}, 0, 0, fmt.Errorf("%w: block %d is misplaced", ErrNotSegment, i)
		}
		off += b.Length
	}
	if off != h.BodyBytes {
		return Header{}, 0, 0, fmt.Errorf("%w: blocks cover %d of %d body bytes", ErrNotSegment, off, h.BodyBytes)
	}
	return h, end, 0, nil
}

// DecodeBlock checks a block against its SHA-256 and decodes its CDRs,
// appending them to dst.
func DecodeBlock(frame []byte, info BlockInfo, dst []*cdrv1.Cdr) ([]*cdrv1.Cdr, error) {
	if int64(len(frame)) != info.Length {
		return dst, fmt.Errorf("segment block: %d bytes, %d expected", len(frame), info.Length)
	}
	sum := sha256.Sum256(frame)
	if hex.EncodeToString(sum[:]) != info.SHA256 {
		return dst, errors.New("segment block: SHA-256 mismatch, the object is damaged")
	}
	raw, err := zdec.DecodeAll(frame, nil)
	if err != nil {
		return dst, fmt.Errorf("segment block: %w", err)
	}
	for len(raw) > 0 {
		n, w := protowire.ConsumeVarint(raw)
		if w < 0 || uint64(len(raw)-w) < n {
			return dst, errors.New("segment block: truncated record")
		}
		c := &cdrv1.Cdr{}
		if err := proto.Unmarshal(raw[w:w+int(n)], c); err != nil {
			return dst, fmt.Errorf("segment block: %w", err)
		}
		dst = append(dst, c)
		raw = raw[w+int(n):]
	}
	return dst, nil
}
