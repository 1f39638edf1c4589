package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// uploadProgress counts bytes read from an upload body and draws
// "sent / total (pct)" on w. The HTTP transport reads the body on its own
// goroutine while the caller waits for the answer, hence the mutex.
type uploadProgress struct {
	r     io.Reader
	w     io.Writer
	label string
	total int64
	tty   bool

	mu       sync.Mutex
	sent     int64
	lastPct  int
	lastDraw time.Time
	done     bool
}

func newUploadProgress(r io.Reader, w io.Writer, label string, total int64) *uploadProgress {
	return &uploadProgress{r: r, w: w, label: label, total: total, tty: isTerminalWriter(w), lastPct: -1}
}

func (p *uploadProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.mu.Lock()
		p.sent += int64(n)
		p.draw(false)
		p.mu.Unlock()
	}
	return n, err
}

// finish draws the final state once; later calls do nothing.
func (p *uploadProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.draw(true)
	p.done = true
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

func (p *uploadProgress) percent() int {
	if p.total <= 0 {
		return 100
	}
	return int(p.sent * 100 / p.total)
}

// draw redraws a terminal line at most ten times a second; into a file or
// pipe it writes a line per quarter, so logs stay short.
func (p *uploadProgress) draw(final bool) {
	if p.done {
		return
	}
	pct := p.percent()
	if p.tty {
		if !final && pct == p.lastPct && time.Since(p.lastDraw) < 100*time.Millisecond {
			return
		}
		fmt.Fprintf(p.w, "\r%s: %s / %s (%d%%)\x1b[K", p.label, fmtBytes(p.sent), fmtBytes(p.total), pct)
	} else {
		step := pct / 25 * 25
		if step == p.lastPct/25*25 && p.lastPct >= 0 && !(final && pct != p.lastPct) {
			return
		}
		fmt.Fprintf(p.w, "%s: %s / %s (%d%%)\n", p.label, fmtBytes(p.sent), fmtBytes(p.total), pct)
	}
	p.lastPct = pct
	p.lastDraw = time.Now()
}

func isTerminalWriter(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
