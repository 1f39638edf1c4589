package store

import (
	"bytes"
	"crypto/rand"
	"sync"
	"time"
)

// crockford is Crockford's base32 alphabet. Its characters are in ascending
// byte order, so comparing two ids as strings compares their numbers, and it
// leaves out I, L, O and U, which people misread when copying ids.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new id: 26 characters encoding 48 bits of Unix
// milliseconds followed by 80 random bits. Ids sort by creation time, which
// is what lets call listings walk newest-first with a cursor instead of
// sorting; ids made in the same millisecond are in random order. Use
// (*Store).NewID where that order matters.
func NewID() string { return newIDAt(time.Now()) }

// NewID returns an id like the package's NewID, but strictly greater than
// every id this Store made before, so calls created in a burst list in the
// order they were made.
func (s *Store) NewID() string { return s.ids.next(s.now()) }

func newIDAt(t time.Time) string { return encodeID(rawID(t)) }

func rawID(t time.Time) [16]byte {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	// crypto/rand.Read never returns an error on supported platforms.
	_, _ = rand.Read(b[6:])
	return b
}

// idSource makes strictly increasing ids: within one millisecond (or when
// the clock steps back) the next id is the previous one plus one, so
// records created in a burst still list in creation order.
type idSource struct {
	mu   sync.Mutex
	last [16]byte
}

func (g *idSource) next(t time.Time) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := rawID(t)
	if bytes.Compare(b[:6], g.last[:6]) <= 0 {
		b = g.last
		for i := len(b) - 1; i >= 0; i-- {
			if b[i]++; b[i] != 0 {
				break
			}
		}
	}
	g.last = b
	return encodeID(b)
}

// encodeID writes the 128 bits of b as 26 base32 digits; 26*5 = 130, so
// the first digit carries two leading zero bits.
func encodeID(b [16]byte) string {
	bit := func(i int) byte {
		if i < 0 {
			return 0
		}
		return (b[i/8] >> (7 - i%8)) & 1
	}
	out := make([]byte, 26)
	for d := range out {
		var v byte
		for j := 0; j < 5; j++ {
			v = v<<1 | bit(d*5+j-2)
		}
		out[d] = crockford[v]
	}
	return string(out)
}
