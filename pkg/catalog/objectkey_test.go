package catalog

import "testing"

// A stored object key reads back as the key that was written, compact or
// whole.
func TestStoredKeyRoundTrip(t *testing.T) {
	const id = "0193f2c4-7b1a-7c3e-9a4b-000000000001"
	for _, tc := range []struct {
		kind, domain, key, field string
	}{
		{KindRecording, "a.example", "recordings/a.example/2026/11/01/" + id + "-a1b2c3d4e5f6", fieldKeyCompact},
		{KindRecording, "a.example", "recordings/a.example/2026/11/01/other-a1b2c3d4e5f6", fieldKeyCompact},
		{KindRecording, "a.example", "recordings/b.example/2026/11/01/" + id + "-a1b2c3d4e5f6", fieldKey},
		{KindRecording, "a.example", "recordings/a.example/x*y", fieldKey},
		{KindRecording, "a.example", "recordings/a.example/", fieldKey},
		{KindRecording, "a.example", "", fieldKey},
		{"voicemail", "a.example", "messages/a.example/" + id, fieldKey},
	} {
		field, value := storedKey(tc.kind, tc.domain, id, tc.key)
		if field != tc.field {
			t.Errorf("%q: stored in %q, want %q", tc.key, field, tc.field)
		}
		if field == fieldKeyCompact && len(value) > 64 {
			t.Errorf("%q: compact value %q is longer than 64 bytes", tc.key, value)
		}
		if got := objectKeyOf(map[string]string{field: value}, tc.kind, tc.domain, id); got != tc.key {
			t.Errorf("%q: read back as %q", tc.key, got)
		}
	}
}
