package main

import (
	"fmt"
	"io"
)

// termSafe writes to w what the commands print, with every control
// character but newline and tab (C0, DEL and the C1 controls, U+0080 to
// U+009F) written as a \u00XX escape. The commands print text read from
// the streams and buckets (DLQ reasons and subjects, confirmations, ledger
// entries, heartbeats), which is hostile until validated: an escape
// sequence in it must not reach the operator's terminal and act there
// (clear the screen, retitle the window, rewrite earlier lines). The
// escape is also valid inside a JSON string, so --json output stays JSON.
type termSafe struct {
	w io.Writer
	// c2 is set when the last byte written was 0xC2, the first byte of a
	// C1 control's UTF-8 encoding (held until the next byte is seen).
	c2 bool
}

func newTermSafe(w io.Writer) io.Writer {
	if _, ok := w.(*termSafe); ok {
		return w
	}
	return &termSafe{w: w}
}

func (t *termSafe) Write(p []byte) (int, error) {
	n := len(p)
	out := make([]byte, 0, len(p)+8)
	if t.c2 {
		t.c2 = false
		if len(p) > 0 && p[0] >= 0x80 && p[0] < 0xa0 {
			out = fmt.Appendf(out, `\u%04x`, p[0])
			p = p[1:]
		} else {
			out = append(out, 0xc2)
		}
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		switch {
		case b == '\n' || b == '\t':
			out = append(out, b)
		case b < 0x20 || b == 0x7f:
			out = fmt.Appendf(out, `\u%04x`, b)
		case b == 0xc2 && i+1 == len(p):
			t.c2 = true
		case b == 0xc2 && p[i+1] >= 0x80 && p[i+1] < 0xa0:
			out = fmt.Appendf(out, `\u%04x`, p[i+1])
			i++
		default:
			out = append(out, b)
		}
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}
