package catalog

import "strings"

// Object keys are stored compactly. A recording's key is
// recordings/<domain>/<yyyy>/<mm>/<dd>/<id>-<12 hex>: its first two
// segments follow from the kind and the domain, and the id is in the
// record already. Stored whole, the key is longer than Redis keeps in a
// hash's compact (listpack) encoding (64 bytes), which would turn every
// artifact hash into a hash table: slower to write and twice the memory.
// So a key with the kind's prefix is stored in the field "k" without the
// prefix and with the id replaced by "*" (e.g. "2026/11/01/*-a1b2c3d4e5f6");
// any other key is stored whole in "key". An object key never contains
// "*" (cds.CheckKey), and one that does is stored whole, so reading the
// record gives back exactly the key that was written.
const (
	fieldKey        = "key"
	fieldKeyCompact = "k"
	keyIDMark       = "*"
)

// objectKeyTop is the first segment of the object keys of a kind, where
// ingest fixes it.
func objectKeyTop(kind string) string {
	if kind == KindRecording {
		return "recordings/"
	}
	return ""
}

// storedKey is the field and value an artifact's object key is stored as.
func storedKey(kind, domain, id, key string) (string, string) {
	top := objectKeyTop(kind)
	if top == "" || domain == "" || strings.Contains(key, keyIDMark) {
		return fieldKey, key
	}
	rest, ok := strings.CutPrefix(key, top+domain+"/")
	if !ok || rest == "" {
		return fieldKey, key
	}
	if id != "" {
		if i := strings.Index(rest, id); i >= 0 {
			rest = rest[:i] + keyIDMark + rest[i+len(id):]
		}
	}
	return fieldKeyCompact, rest
}

// objectKeyOf reads the object key of a stored record of kind, domain and
// id back from its hash.
func objectKeyOf(m map[string]string, kind, domain, id string) string {
	rest, ok := m[fieldKeyCompact]
	if !ok {
		return m[fieldKey]
	}
	return objectKeyTop(kind) + domain + "/" + strings.Replace(rest, keyIDMark, id, 1)
}
