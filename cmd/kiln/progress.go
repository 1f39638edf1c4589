package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressState is where a long task stands: a status word, items (an
// image's layers) and bytes; zero fields are left out of the line.
type progressState struct {
	Status            string
	Items, ItemsTotal int
	Bytes, Total      int64
}

func (s progressState) percent() int64 {
	if s.Total <= 0 {
		return 100
	}
	return s.Bytes * 100 / s.Total
}

// progressBar is the CLI's one progress renderer (uploads, pulls, deploy
// imports). On a terminal it redraws one line at most ten times a second;
// into a file or pipe it writes a line when the status or item count
// changes or another quarter of the bytes is done, so logs stay short.
// Uploads update it from the HTTP transport's goroutine, hence the mutex.
type progressBar struct {
	w     io.Writer
	label string
	tty   bool

	mu       sync.Mutex
	last     progressState // the latest update
	drawn    progressState // what the line shows
	lastDraw time.Time
	any      bool // a line was drawn
	closed   bool
}

func newProgressBar(w io.Writer, label string) *progressBar {
	return &progressBar{w: w, label: label, tty: isTerminalWriter(w)}
}

func (b *progressBar) text(s progressState) string {
	t := b.label + ":"
	sep := " "
	if s.Status != "" {
		t += sep + s.Status
		sep = ", "
	}
	if s.ItemsTotal > 0 {
		t += fmt.Sprintf("%s%d/%d layers", sep, s.Items, s.ItemsTotal)
		sep = ", "
	}
	if s.Total > 0 {
		t += fmt.Sprintf("%s%s / %s (%d%%)", sep, fmtBytes(s.Bytes), fmtBytes(s.Total), s.percent())
	}
	return t
}

// set records s and draws it if the throttle allows.
func (b *progressBar) set(s progressState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = s
	b.draw(false)
}

// expect sets the byte total of an upload without drawing: the first line
// comes with the first bytes.
func (b *progressBar) expect(total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last.Total = total
}

// add counts n more bytes, for uploads.
func (b *progressBar) add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last.Bytes += n
	b.draw(false)
}

func (b *progressBar) draw(final bool) {
	if b.closed {
		return
	}
	s := b.last
	if b.tty {
		if !final && b.any && s.Status == b.drawn.Status && s.Items == b.drawn.Items && time.Since(b.lastDraw) < 100*time.Millisecond {
			return
		}
		fmt.Fprintf(b.w, "\r%s\x1b[K", b.text(s))
	} else {
		quarter := func(q progressState) int64 { return q.percent() / 25 }
		same := s.Status == b.drawn.Status && s.Items == b.drawn.Items && quarter(s) == quarter(b.drawn)
		if b.any && same && !(final && s != b.drawn) {
			return
		}
		fmt.Fprintln(b.w, b.text(s))
	}
	b.drawn, b.lastDraw, b.any = s, time.Now(), true
}

// done draws the final state if the line does not show it yet.
func (b *progressBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.any || b.last.Total > 0 {
		b.draw(true)
	}
}

// finish ends the bar's line; later calls and updates do nothing.
func (b *progressBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	if b.tty && b.any {
		fmt.Fprintln(b.w)
	}
}

// reader counts what is read from r into the bar.
func (b *progressBar) reader(r io.Reader) io.Reader { return &progressReader{r: r, bar: b} }

type progressReader struct {
	r   io.Reader
	bar *progressBar
}

func (p *progressReader) Read(buf []byte) (int, error) {
	n, err := p.r.Read(buf)
	if n > 0 {
		p.bar.add(int64(n))
	}
	return n, err
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
