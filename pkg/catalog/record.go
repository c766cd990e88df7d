package catalog

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// stored is an artifact as its packed record holds it: the decision (state
// and owed effects) and what every read and owed effect needs. The domain
// and the UTC hour come from the key the record is in, the reseller from
// the domain registry, so neither is stored.
type stored struct {
	State      State
	Pending    string
	ID         string
	Kind       string // recording, voicemail, fax_received, fax_sent, fax_outbox, sms
	Mode       string // recordings: automatic or on_demand
	At         time.Time
	Size       int64
	User       string
	CallID     string // recordings
	Folder     string // sms
	SHA256     string
	ObjectKey  string
	AcceptedAt time.Time
	Seq        uint64
	// Level is the call index level the record's call entry is in.
	Level       int
	DurationS   uint32
	From, To    string
	ContentType string
	// The decision: a refusal's or a deletion's reason, the artifact an
	// admission evicted, and for a deletion its rule, actor and time.
	Reason, EvictedID, Rule, Actor string
	DeletedAt                      time.Time
}

// Positions in the packed record (0-based here, 1-based in the scripts).
const (
	fState   = iota // state letter followed by the owed effects
	fID             // the id (a canonical UUID as 17 bytes)
	fKind           // kind code
	fAt             // ms into the record's UTC hour
	fSize           //
	fUser           //
	fCall           // recordings: call id; sms: folder
	fSHA            // 32 raw bytes for a hex SHA-256
	fKey            // the object key, compact when it follows ingest's layout
	fAccept         // accepted_at minus the record's time, ms
	fSeq            // ingest stream sequence
	fLevel          // call index level
	fDur            // recordings: duration (s); messages: from
	fType           // content type (a code for the common ones)
	fTo             // messages: to
	fReason         // written by the scripts: refusal or deletion reason
	fEvicted        // the id an admission evicted (encoded as fID)
	fRule           // deletion rule
	fActor          // deletion actor
	fDeleted        // deletion time, ms
	fieldCount
)

// Kind codes.
var kindCodes = map[string]int64{"recording:automatic": 1, "recording:on_demand": 2, "voicemail": 3, "fax_received": 4, "fax_sent": 5, "fax_outbox": 6, "sms": 7}

func kindCode(kind, mode string) int64 {
	if kind == KindRecording {
		return kindCodes["recording:"+mode]
	}
	return kindCodes[kind]
}

func kindOf(code int64) (kind, mode string) {
	for k, c := range kindCodes {
		if c == code {
			if m, ok := strings.CutPrefix(k, "recording:"); ok {
				return KindRecording, m
			}
			return k, ""
		}
	}
	return "", ""
}

// Content types stored as a code.
var typeCodes = []string{"", "audio/wav", "audio/mpeg", "audio/ogg", "audio/x-wav", "audio/opus", "audio/mp4", "application/pdf", "image/tiff", "text/plain"}

func typeValue(ct string) value {
	for i, t := range typeCodes {
		if i > 0 && t == ct {
			return num(int64(i))
		}
	}
	return str(ct)
}

func typeOf(v value) string {
	if v.isNum {
		if v.n > 0 && int(v.n) < len(typeCodes) {
			return typeCodes[v.n]
		}
		return ""
	}
	return v.s
}

// Ids that are canonical lower-case UUIDs are stored as a mark byte and
// their 16 bytes; a valid id never contains the mark.
const packedMark = "\x01"

func encodeID(id string) string {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return id
	}
	h := id[0:8] + id[9:13] + id[14:18] + id[19:23] + id[24:36]
	if strings.ToLower(h) != h {
		return id
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return id
	}
	return packedMark + string(b)
}

func decodeID(s string) string {
	if len(s) != 17 || !strings.HasPrefix(s, packedMark) {
		return s
	}
	h := hex.EncodeToString([]byte(s[1:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// A hex SHA-256 is stored as its 32 bytes; anything else behind a zero
// byte, and behind one more mark byte when that would make it 32 bytes
// long too, so only a raw digest is ever exactly 32 bytes.
func encodeSHA(s string) string {
	if len(s) == 64 && strings.ToLower(s) == s {
		if b, err := hex.DecodeString(s); err == nil {
			return string(b)
		}
	}
	if s == "" {
		return ""
	}
	v := "\x00" + s
	if len(v) == 32 {
		v = packedMark + v
	}
	return v
}

func decodeSHA(s string) string {
	switch {
	case len(s) == 32:
		return hex.EncodeToString([]byte(s))
	case len(s) == 33 && strings.HasPrefix(s, packedMark):
		return s[2:]
	case strings.HasPrefix(s, "\x00"):
		return s[1:]
	}
	return s
}

// Object keys are stored compactly. A recording's key, as ingest names
// it, is recordings/<domain>/<yyyy>/<mm>/<dd of started_at>/<id>-<12 hex>:
// all but the 12 hex digits follow from the record and its key, so only
// their 6 bytes are stored, behind mark 1. Any other key of the form
// <segment>/<domain>/<rest containing the id> is stored as mark 2, the
// segment, and the rest with the id replaced by a zero byte. Anything else
// is stored whole, behind mark 3 when it starts with a mark byte itself.
// (Object keys that ingest writes never contain control bytes.)
const (
	keyMarkNamed = "\x02"
	keyMarkWhole = "\x03"
)

func encodeKey(kind, domain, id string, at time.Time, key string) string {
	if kind == KindRecording {
		if rest, ok := strings.CutPrefix(key, recordingKeyPrefix(domain, id, at)); ok && len(rest) == 12 {
			if b, err := hex.DecodeString(rest); err == nil && hex.EncodeToString(b) == rest {
				return packedMark + string(b)
			}
		}
	}
	if seg, rest, ok := strings.Cut(key, "/"); ok && id != "" && domain != "" && !strings.ContainsAny(key, "\x00\x01\x02\x03") {
		if rest, ok := strings.CutPrefix(rest, domain+"/"); ok && strings.Contains(rest, id) {
			return keyMarkNamed + seg + "/" + strings.Replace(rest, id, "\x00", 1)
		}
	}
	if key != "" && key[0] <= 3 {
		return keyMarkWhole + key
	}
	return key
}

func decodeKey(kind, domain, id string, at time.Time, s string) string {
	switch {
	case kind == KindRecording && len(s) == 7 && strings.HasPrefix(s, packedMark):
		return recordingKeyPrefix(domain, id, at) + hex.EncodeToString([]byte(s[1:]))
	case strings.HasPrefix(s, keyMarkNamed):
		seg, rest, _ := strings.Cut(s[1:], "/")
		return seg + "/" + domain + "/" + strings.Replace(rest, "\x00", id, 1)
	case strings.HasPrefix(s, keyMarkWhole):
		return s[1:]
	}
	return s
}

func recordingKeyPrefix(domain, id string, at time.Time) string {
	return "recordings/" + domain + "/" + at.UTC().Format("2006/01/02") + "/" + id + "-"
}

// hourOf is the UTC hour (since the Unix epoch) a time falls in.
func hourOf(t time.Time) int64 { return floorDiv(t.UnixMilli(), hourMS) }

const hourMS = 3_600_000

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// values are the fields of s as the record of domain in the bucket of its hour.
// Recordings have 14 fields, messages 15; the scripts add the decision
// fields. An absolute record (a conflict's, in no hour bucket) keeps its
// whole time and object key.
func (s stored) values(domain string, absolute bool) []value {
	return s.appendValues(make([]value, 0, fieldCount), domain, absolute)
}

// appendValues appends the fields of s (see values) to vs.
func (s stored) appendValues(vs []value, domain string, absolute bool) []value {
	at := s.At.UnixMilli()
	code := kindCode(s.Kind, s.Mode)
	base := hourOf(s.At) * hourMS
	key := encodeKey(s.Kind, domain, s.ID, s.At, s.ObjectKey)
	if absolute {
		base, key = 0, s.ObjectKey
	}
	vs = append(vs,
		str(string(s.State)+s.Pending),
		str(encodeID(s.ID)),
		num(code),
		num(at-base),
		num(s.Size),
		str(s.User),
	)
	if s.Kind == KindRecording {
		vs = append(vs, str(s.CallID))
	} else {
		vs = append(vs, str(s.Folder))
	}
	vs = append(vs,
		str(encodeSHA(s.SHA256)),
		str(key),
		num(s.AcceptedAt.UnixMilli()-at),
		num(int64(s.Seq)),
		num(int64(s.Level)),
	)
	if s.Kind == KindRecording {
		vs = append(vs, num(int64(s.DurationS)), typeValue(s.ContentType))
	} else {
		vs = append(vs, str(s.From), typeValue(s.ContentType), str(s.To))
	}
	return vs
}

// pack is the record of a domain's artifact; absolute keeps the whole
// time and object key.
func (s stored) pack(domain string, absolute bool) string {
	return packValues(s.values(domain, absolute))
}

// packRefused is a refusal's record with its reason, as the refusal
// script writes it (t[16] = reason, the holes below it false).
func (s stored) packRefused(domain string) string {
	vs := s.values(domain, true)
	for len(vs) < fReason {
		vs = append(vs, value{hole: true})
	}
	return packValues(append(vs, str(s.Reason)))
}

// unpackStored decodes a record of domain found in the bucket of hour.
func unpackStored(domain string, hour int64, raw string) (stored, error) {
	vs, err := unpackValues(raw)
	if err != nil {
		return stored{}, err
	}
	if len(vs) < fDur {
		return stored{}, fmt.Errorf("%w: %d fields", errPacked, len(vs))
	}
	for len(vs) < fieldCount {
		vs = append(vs, value{hole: true})
	}
	text := func(i int) string { return vs[i].s }
	n := func(i int) int64 { return vs[i].n }
	st := text(fState)
	if st == "" {
		return stored{}, fmt.Errorf("%w: no state", errPacked)
	}
	kind, mode := kindOf(n(fKind))
	at := time.UnixMilli(hour*hourMS + n(fAt)).UTC()
	s := stored{
		State: State(st[:1]), Pending: st[1:], ID: decodeID(text(fID)), Kind: kind, Mode: mode, At: at,
		Size: n(fSize), User: text(fUser), SHA256: decodeSHA(text(fSHA)),
		AcceptedAt: time.UnixMilli(at.UnixMilli() + n(fAccept)).UTC(), Seq: uint64(n(fSeq)), Level: int(n(fLevel)),
		ContentType: typeOf(vs[fType]), Reason: text(fReason), EvictedID: decodeID(text(fEvicted)), Rule: text(fRule), Actor: text(fActor),
	}
	s.ObjectKey = decodeKey(kind, domain, s.ID, at, text(fKey))
	if kind == KindRecording {
		s.CallID, s.DurationS = text(fCall), uint32(n(fDur))
	} else {
		s.Folder, s.From, s.To = text(fCall), text(fDur), text(fTo)
	}
	if vs[fDeleted].isNum {
		s.DeletedAt = time.UnixMilli(n(fDeleted)).UTC()
	}
	return s, nil
}

func (s stored) recording(domain, reseller string) Recording {
	return Recording{
		ID: s.ID, CallID: s.CallID, Reseller: reseller, Domain: domain, User: s.User, Mode: s.Mode, StartedAt: s.At,
		DurationS: s.DurationS, ContentType: s.ContentType, Size: s.Size, SHA256: s.SHA256, ObjectKey: s.ObjectKey,
		AcceptedAt: s.AcceptedAt, StreamSeq: s.Seq,
	}
}

func (s stored) record(domain, reseller string) Record {
	return Record{
		ID: s.ID, Domain: domain, User: s.User, CallID: s.CallID, Kind: s.Kind, Folder: s.Folder, Mode: s.Mode, Reseller: reseller,
		State: s.State, Reason: s.Reason, Rule: s.Rule, Actor: s.Actor, Pending: s.Pending, EvictedID: s.EvictedID,
		ObjectKey: s.ObjectKey, Size: s.Size, StartedAt: s.At, DeletedAt: s.DeletedAt, AcceptedAt: s.AcceptedAt, SHA256: s.SHA256, Seq: s.Seq,
	}
}

// fieldNames name the positions of a packed record for Describe.
var fieldNames = [fieldCount]string{"st", "id", "kind", "at", "size", "user", "call", "sha", "key", "accept", "seq", "level", "dur", "type", "to", "rs", "ev", "ru", "ac", "dt"}

// Describe renders a packed record as space-separated name=value pairs
// (strings quoted), for operators and for tests that compare dumps; ok is
// false for a value that is not a record.
func Describe(raw string) (string, bool) {
	vs, err := unpackValues(raw)
	if err != nil || len(vs) < fDur || len(vs) > fieldCount {
		return "", false
	}
	parts := make([]string, 0, len(vs))
	for i, v := range vs {
		switch {
		case v.hole:
			continue
		case v.isNum:
			parts = append(parts, fmt.Sprintf("%s=%d", fieldNames[i], v.n))
		default:
			parts = append(parts, fmt.Sprintf("%s=%q", fieldNames[i], v.s))
		}
	}
	return strings.Join(parts, " "), true
}
