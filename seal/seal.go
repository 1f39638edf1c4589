// Package seal keeps kilnd's own keys and seals values with them: the
// token signing key and the key secrets are stored under, each a file in
// the data dir that only its owner may read. A sealed value is AES-256-GCM
// with a random nonce, bound to where it is kept (the additional data), so
// a sealed value copied to another secret's slot does not open there.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the size of the keys LoadOrCreateKey makes.
const KeySize = 32

// LoadOrCreateKey returns the key kept at path, creating a random one the
// first time; what names it in errors ("token key"). The file is written
// whole under a temporary name and renamed into place, so a crash never
// leaves a short key behind. A key file others can read is refused rather
// than used.
func LoadOrCreateKey(path, what string) ([]byte, error) {
	key, err := readKey(path, what)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	// Make the rename durable: a key lost in a crash would quietly make
	// everything sealed or signed with it useless.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return key, nil
}

func readKey(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %#o: it must be readable by its owner only (chmod 600)", what, path, perm)
	}
	key, err := io.ReadAll(io.LimitReader(f, 1<<12))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(key) < KeySize {
		return nil, fmt.Errorf("%s %s holds %d bytes, want at least %d; delete it to have a new one made (what it signed or sealed is then lost)", what, path, len(key), KeySize)
	}
	return key, nil
}

// Box seals and opens values with one key.
type Box struct{ aead cipher.AEAD }

// NewBox makes a Box from a key of KeySize bytes (longer keys use their
// first KeySize).
func NewBox(key []byte) (*Box, error) {
	if len(key) < KeySize {
		return nil, fmt.Errorf("seal: key of %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key[:KeySize])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plain for the slot where (e.g. "app id/secret name").
func (b *Box) Seal(plain []byte, where string) []byte {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		// crypto/rand does not fail on Linux; a zero nonce reused would
		// be a real weakness, so stop rather than go on.
		panic("seal: no randomness: " + err.Error())
	}
	return b.aead.Seal(nonce, nonce, plain, []byte(where))
}

// ErrOpen is a sealed value that does not open: another key, another
// slot, or tampered with.
var ErrOpen = errors.New("sealed value does not open (another key, another place, or altered)")

// Open decrypts what Seal made for the same slot.
func (b *Box) Open(sealed []byte, where string) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n {
		return nil, ErrOpen
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], []byte(where))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}
