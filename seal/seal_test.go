package seal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpens(t *testing.T) {
	key := bytes.Repeat([]byte{7}, KeySize)
	b, err := NewBox(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed := b.Seal([]byte("hunter2"), "app/db-password")
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("the sealed value holds the plain text")
	}
	if again := b.Seal([]byte("hunter2"), "app/db-password"); bytes.Equal(again, sealed) {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	plain, err := b.Open(sealed, "app/db-password")
	if err != nil || string(plain) != "hunter2" {
		t.Fatalf("open: %q, %v", plain, err)
	}
	other, _ := NewBox(bytes.Repeat([]byte{8}, KeySize))
	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"another slot": func() ([]byte, error) { return b.Open(sealed, "app/other") },
		"another key":  func() ([]byte, error) { return other.Open(sealed, "app/db-password") },
		"tampered":     func() ([]byte, error) { return b.Open(tampered, "app/db-password") },
		"too short":    func() ([]byte, error) { return b.Open(sealed[:4], "app/db-password") },
	} {
		if _, err := open(); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: %v, want ErrOpen", name, err)
		}
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k", "secrets.key")
	k1, err := LoadOrCreateKey(path, "secrets key")
	if err != nil || len(k1) != KeySize {
		t.Fatalf("%d bytes, %v", len(k1), err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	k2, err := LoadOrCreateKey(path, "secrets key")
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateKey(path, "secrets key"); err == nil || !strings.Contains(err.Error(), "secrets key") || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a readable key file: %v", err)
	}
}
