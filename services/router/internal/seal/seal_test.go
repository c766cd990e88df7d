package seal

import (
	"bytes"
	"strings"
	"testing"
)

func TestSealOpenAndRotate(t *testing.T) {
	a, _ := NewKeySpec("k1")
	b, _ := NewKeySpec("k2")
	old, err := Parse(a)
	if err != nil {
		t.Fatal(err)
	}
	s, err := old.Seal([]byte("hunter2"), "cfg-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID != "k1" || bytes.Contains(s.Box, []byte("hunter2")) {
		t.Fatalf("sealed = %+v", s)
	}
	// Rotation: the new key seals, the old one still opens.
	rotated, err := Parse(b + "," + a)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(s, "cfg-1"); err != nil || string(got) != "hunter2" {
		t.Fatalf("open after rotation = %q, %v", got, err)
	}
	s2, _ := rotated.Seal([]byte("x"), "cfg-1")
	if s2.KeyID != "k2" {
		t.Fatalf("rotated keyring sealed with %s, want k2", s2.KeyID)
	}
	// The old key alone cannot open what the new one sealed, and says why.
	if _, err := old.Open(s2, "cfg-1"); err == nil || !strings.Contains(err.Error(), `"k2"`) {
		t.Fatalf("open with a missing key = %v", err)
	}
	// Bound to its owner: another configuration cannot use it.
	if _, err := old.Open(s, "cfg-2"); err == nil {
		t.Fatal("a secret sealed for cfg-1 opened for cfg-2")
	}
	// Tampering is detected.
	s.Box[len(s.Box)-1] ^= 1
	if _, err := old.Open(s, "cfg-1"); err == nil {
		t.Fatal("a tampered secret opened")
	}
}

func TestParseRefusesAndNeverQuotesTheKey(t *testing.T) {
	for _, spec := range []string{"nokey", "k1=c2hvcnQ=", "k 1=" + strings.Repeat("A", 44), "k1=!!!!"} {
		_, err := Parse(spec)
		if err == nil {
			t.Errorf("Parse(%q) accepted", spec)
			continue
		}
		if _, b64, ok := strings.Cut(spec, "="); ok && len(b64) > 3 && strings.Contains(err.Error(), b64) {
			t.Errorf("the error %q quotes the key", err)
		}
	}
	a, _ := NewKeySpec("k1")
	if _, err := Parse(a + "," + a); err == nil {
		t.Error("a key id given twice was accepted")
	}
	empty, err := Parse("")
	if err != nil || empty.HasKey() {
		t.Fatalf("empty spec = %v, %v", empty, err)
	}
	if _, err := empty.Seal([]byte("x"), "c"); err != ErrNoKey {
		t.Fatalf("seal without a key = %v, want ErrNoKey", err)
	}
}
