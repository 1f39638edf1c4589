package store

import (
	"crypto/sha256"
	"time"
)

// DerivedID is the id of something that must exist once however many
// times it is made: the cron fire of one trigger at one scheduled time,
// made by every node that thinks it is due. The same inputs give the same
// id, so the second insert is a conflict; it sorts by t like any id.
func DerivedID(t time.Time, seed string) string {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	sum := sha256.Sum256([]byte(seed))
	copy(b[6:], sum[:10])
	return encodeID(b)
}
