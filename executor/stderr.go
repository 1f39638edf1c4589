package executor

import (
	"bufio"
	"bytes"
	"io"

	"github.com/sirupsen/logrus"
)

// maxLogLine caps one logged stderr line; longer lines are split, so a
// function that never writes a newline cannot grow kilnd's memory. It is
// also the reader's buffer, held by every hot container: kept small.
const maxLogLine = 4 << 10

// pumpStderr logs each stderr line with the container's fields and the
// call id of the call in flight, and copies it to that call's log sink.
// It must keep reading until EOF: a container whose stderr FIFO is not
// drained blocks on write.
func pumpStderr(r io.Reader, log *logrus.Entry, current func() *callSink) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			text := bytes.TrimRight(line, "\r\n")
			entry := log
			if s := current(); s != nil {
				entry = log.WithField("call_id", s.id)
				if s.logs != nil {
					_, _ = s.logs.Write(line)
				}
			}
			entry.Info(string(text))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
