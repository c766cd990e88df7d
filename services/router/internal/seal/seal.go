// Package seal encrypts configuration secrets at rest with AES-256-GCM.
// The keys come from CALLVAULT_SECRET_KEY as "id=base64key[,id=base64key]":
// the first seals, every one opens, and each sealed value names the id of
// the key that sealed it, so keys rotate by putting a new one first and
// re-saving. The associated data binds a sealed value to its owner (the
// configuration id): a value copied to another configuration does not open.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Sealed is an encrypted secret: the key id and nonce||ciphertext.
type Sealed struct {
	KeyID string
	Box   []byte
}

// Keyring seals with its first key and opens with any.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// ErrNoKey says no key is configured, so no secret can be stored.
var ErrNoKey = errors.New("no secret key is configured (CALLVAULT_SECRET_KEY): secrets cannot be stored")

var idRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,32}$`)

// Parse reads a key list. An empty string is a keyring that holds no key:
// it refuses to seal and to open.
func Parse(spec string) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	if strings.TrimSpace(spec) == "" {
		return k, nil
	}
	for i, item := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || !idRE.MatchString(id) {
			return nil, fmt.Errorf("secret key %d: want id=base64key with an id of 1-32 of [A-Za-z0-9._-]", i+1)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			raw, err = base64.RawStdEncoding.DecodeString(b64)
		}
		if err != nil || len(raw) != 32 {
			// The key itself is never quoted.
			return nil, fmt.Errorf("secret key %q: want 32 bytes, base64-encoded", id)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("secret key %q is given twice", id)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("secret key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secret key %q: %w", id, err)
		}
		if k.current == "" {
			k.current = id
		}
		k.aeads[id] = aead
	}
	return k, nil
}

// NewKeySpec returns a fresh key list of one key with the given id.
func NewKeySpec(id string) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return id + "=" + base64.StdEncoding.EncodeToString(raw), nil
}

// HasKey reports whether secrets can be sealed.
func (k *Keyring) HasKey() bool { return k != nil && k.current != "" }

// CurrentID is the id of the sealing key.
func (k *Keyring) CurrentID() string { return k.current }

// Seal encrypts plain for owner.
func (k *Keyring) Seal(plain []byte, owner string) (Sealed, error) {
	if !k.HasKey() {
		return Sealed{}, ErrNoKey
	}
	aead := k.aeads[k.current]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return Sealed{}, fmt.Errorf("seal: %w", err)
	}
	return Sealed{KeyID: k.current, Box: aead.Seal(nonce, nonce, plain, []byte(owner))}, nil
}

// Open decrypts s for owner.
func (k *Keyring) Open(s Sealed, owner string) ([]byte, error) {
	if k == nil {
		return nil, ErrNoKey
	}
	aead, ok := k.aeads[s.KeyID]
	if !ok {
		return nil, fmt.Errorf("the secret was sealed with key %q, which CALLVAULT_SECRET_KEY does not hold", s.KeyID)
	}
	if len(s.Box) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("the sealed secret is truncated")
	}
	plain, err := aead.Open(nil, s.Box[:aead.NonceSize()], s.Box[aead.NonceSize():], []byte(owner))
	if err != nil {
		return nil, fmt.Errorf("the sealed secret does not open with key %q for this configuration", s.KeyID)
	}
	return plain, nil
}
