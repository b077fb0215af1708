// Command natswrites measures what one stored JetStream write of each kind
// the worker makes costs nats-server, against a plain publish measured in
// the same run: the figures behind the pipeline's write budget
// (BENCHMARKS.md, "What each stored write costs").
//
// Kinds, each a request that waits for its PubAck, 64 in flight:
//   - plain: one subject, no headers (the baseline);
//   - msgid: plus Nats-Msg-Id (the events and confirmations streams dedupe);
//   - confirmation: a new subject per message, one message per subject,
//     Nats-Expected-Last-Subject-Sequence 0, as worker.publishConfirmation
//     (no Nats-Msg-Id since 2026-12-06, eleventh session; the bench kept
//     one until the fifteenth);
//   - ledger: 1,000 keys, one message per subject, each write
//     compare-and-set on the key's last revision, as worker.Ledger.Put;
//   - ledger-batch: the same writes as atomic batches of -batch messages
//     (Nats-Batch-Id, one PubAck per batch), the "batching of ledger
//     commits" the issue suggests;
//   - intent: a claimless lease holder's write intent appended to the
//     intent log (ownership.IntentLog: every intent appended while the
//     previous batch was being stored shares one message), the record that
//     would replace the claim's; per write is per intent;
//   - intent-mem: the same with the log in memory storage (kept by the
//     servers' processes only: lost when every replica's process is);
//   - plain-fast, confirmation-fast, ledger-fast: the plain, confirmation
//     and ledger writes through one fast-ingest batch (ADR-50, nats-server
//     2.14+, a stream with allow_batched): each message is stored as it
//     arrives, per-message header checks still run, and the server
//     acknowledges every few messages instead of each one (flow control);
//   - confirmation-fast8: confirmation writes as fast-ingest batches of 8,
//     8 batches at a time, the shape a group commit of concurrent
//     confirmations would take (each batch starts with a flow ack and ends
//     with the PubAck of its committing last message).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/ownership"
)

const (
	inFlight = 64
	keys     = 1000
)

func main() {
	n := flag.Int("writes", 20000, "writes per kind and run")
	runs := flag.Int("runs", 2, "runs of every kind (each printed)")
	batch := flag.Int("batch", 16, "messages per atomic batch")
	nodes := flag.Int("cluster", 0, "run on a cluster of this many nats-server processes on loopback, replicas = nodes (0: one server)")
	serverBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	flag.Parse()
	if err := run(*n, *runs, *batch, *nodes, *serverBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type pubAck struct {
	Seq   uint64 `json:"seq"`
	Count int    `json:"count"`
	Error *struct {
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

func run(n, runs, batch, nodes int, serverBin string) error {
	dir, err := os.MkdirTemp("", "keyrelay-natswrites")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := benchkit.StartServers(serverBin, dir, nodes)
	if err != nil {
		return err
	}
	defer srv.Stop()
	if batch < 1 || n%batch != 0 {
		return fmt.Errorf("-writes %d is not a multiple of -batch %d", n, batch)
	}
	js, nc := srv.JS, srv.JS.Conn()
	fmt.Printf("stored-write cost: nats-server %s on %s, %d writes per kind, %d in flight, %d CPUs\n",
		nc.ConnectedServerVersion(), srv.Shape, n, inFlight, runtime.NumCPU())
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), 700) // about a ledger entry
	for r := 0; r < runs; r++ {
		var plain float64
		for _, kind := range []string{"plain", "msgid", "confirmation", "ledger", "ledger-batch", "intent", "intent-mem", "plain-fast", "confirmation-fast", "ledger-fast", "confirmation-fast8"} {
			name := fmt.Sprintf("W_%s_%d", kind, r)
			subj := fmt.Sprintf("w.%s.%d", kind, r)
			cfg := jetstream.StreamConfig{Name: name, Subjects: []string{subj + ".>"}, Storage: jetstream.FileStorage, Replicas: srv.Replicas}
			switch kind {
			case "msgid":
				cfg.Duplicates = 2 * time.Minute
			case "confirmation":
				cfg.Duplicates, cfg.MaxMsgsPerSubject = 2*time.Minute, 1
			case "ledger":
				cfg.MaxMsgsPerSubject = 1
			case "ledger-batch":
				cfg.MaxMsgsPerSubject, cfg.AllowAtomicPublish = 1, true
			case "intent-mem":
				cfg.Storage = jetstream.MemoryStorage
			case "plain-fast":
				cfg.AllowBatchPublish = true
			case "confirmation-fast", "confirmation-fast8":
				cfg.Duplicates, cfg.MaxMsgsPerSubject, cfg.AllowBatchPublish = 2*time.Minute, 1, true
			case "ledger-fast":
				cfg.MaxMsgsPerSubject, cfg.AllowBatchPublish = 1, true
			}
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				return fmt.Errorf("stream %s: %w", name, err)
			}
			c0 := benchkit.ReadCPU()
			start := time.Now()
			var werr error
			switch kind {
			case "ledger-batch":
				werr = batched(nc, subj, payload, n, batch)
			case "intent", "intent-mem":
				werr = intents(js, subj, n)
			case "plain-fast", "confirmation-fast", "ledger-fast":
				werr = fast(nc, strings.TrimSuffix(kind, "-fast"), subj, payload, n)
			case "confirmation-fast8":
				werr = fastGroups(nc, subj, payload, n, 8)
			default:
				werr = single(nc, kind, subj, payload, n)
			}
			if werr != nil {
				return fmt.Errorf("%s: %w", kind, werr)
			}
			el := time.Since(start)
			c1 := benchkit.ReadCPU()
			server := float64((c1["nats-server"] - c0["nats-server"]).Microseconds()) / 1000 / float64(n)
			if kind == "plain" {
				plain = server
			}
			fmt.Printf("  run %d: %-13s %8.0f writes/s   ms CPU per write: %s   nats-server against plain %.2fx\n",
				r+1, kind, float64(n)/el.Seconds(), benchkit.PerOp(c0, c1, n, "nats-server", "bench"), server/plain)
		}
	}
	return nil
}

// intents appends n intents to one intent log, inFlight at a time.
func intents(js jetstream.JetStream, subj string, n int) error {
	log := ownership.NewIntentLog(js, subj+".1")
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	until := time.Now().Add(time.Minute)
	for g := 0; g < inFlight; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				in := ownership.Intent{Key: "team.k" + strconv.Itoa(i%keys), EventID: nuid.Next(), StreamSeq: uint64(i + 1),
					Lane: "events", Generation: uint64(i + 1), Until: until}
				if err := log.Append(context.Background(), in); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return loadErr(&firstErr)
}

// single makes n writes of kind, inFlight at a time. Ledger writes keep
// each key's revision; a goroutine owns a range of keys, so a
// compare-and-set never loses to another writer.
func single(nc *nats.Conn, kind, subj string, payload []byte, n int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	per := keys / inFlight
	for g := 0; g < inFlight; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			revs := map[int]uint64{}
			k := g * per
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				m := &nats.Msg{Subject: subj + ".k", Data: payload, Header: nats.Header{}}
				switch kind {
				case "msgid":
					m.Header.Set("Nats-Msg-Id", "m-"+strconv.Itoa(i))
				case "confirmation":
					asConfirmation(m, subj)
				case "ledger":
					m.Subject = subj + ".team.k" + strconv.Itoa(k)
					m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(revs[k], 10))
				}
				seq, err := request(nc, m)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if kind == "ledger" {
					revs[k] = seq
					if k++; k == (g+1)*per {
						k = g * per
					}
				}
			}
		}(g)
	}
	wg.Wait()
	return loadErr(&firstErr)
}

// batched makes n ledger writes as atomic batches of size messages,
// inFlight/size batches at a time: every message but the last is
// published without waiting, the last carries Nats-Batch-Commit and gets
// the batch's PubAck (its sequence is the batch's last).
func batched(nc *nats.Conn, subj string, payload []byte, n, size int) error {
	batchers := max(1, inFlight/size)
	per := keys / batchers
	total := int64(n / size) // n is a multiple of size (checked in run)
	var claimed atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for g := 0; g < batchers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			revs := map[int]uint64{}
			k := g * per
			ks := make([]int, size)
			for claimed.Add(1) <= total {
				id := nuid.Next()
				for i := 0; i < size; i++ {
					ks[i] = k
					m := &nats.Msg{Subject: subj + ".team.k" + strconv.Itoa(k), Data: payload, Header: nats.Header{
						"Nats-Expected-Last-Subject-Sequence": {strconv.FormatUint(revs[k], 10)},
						"Nats-Batch-Id":                       {id},
						"Nats-Batch-Sequence":                 {strconv.Itoa(i + 1)},
					}}
					if k++; k == (g+1)*per {
						k = g * per
					}
					if i < size-1 {
						if err := nc.PublishMsg(m); err != nil {
							firstErr.CompareAndSwap(nil, err)
							return
						}
						continue
					}
					m.Header.Set("Nats-Batch-Commit", "1")
					last, err := request(nc, m)
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					for j, kk := range ks {
						revs[kk] = last - uint64(size-1-j)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	return loadErr(&firstErr)
}

// fast makes n writes of kind through one fast-ingest batch (ADR-50,
// nats-server 2.14+): each message is stored as it arrives and the server
// acknowledges every few messages instead of each one; per-message
// header checks still run, and a refused message is reported by its
// batch sequence. The batch continues past a refused message ("gap ok").
func fast(nc *nats.Conn, kind, subj string, payload []byte, n int) error {
	inbox := nc.NewInbox()
	const flow = 100
	acks := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(inbox+".>", acks)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	type ctl struct {
		Type  string          `json:"type"`
		Seq   uint64          `json:"seq"`
		Msgs  uint64          `json:"msgs"`
		Error json.RawMessage `json:"error"`
	}
	var acked, window uint64 = 0, 1
	revs := map[int]uint64{}
	handle := func(m *nats.Msg) (done bool, err error) {
		var c ctl
		if err := json.Unmarshal(m.Data, &c); err != nil {
			return false, fmt.Errorf("control message %q: %w", m.Data, err)
		}
		switch c.Type {
		case "ack":
			acked, window = c.Seq, max(1, c.Msgs)
			return false, nil
		case "":
			if len(c.Error) > 0 {
				return true, fmt.Errorf("batch ended: %s", c.Error)
			}
			return true, nil
		}
		return false, fmt.Errorf("batch %s: %s", c.Type, m.Data)
	}
	wait := func() error {
		select {
		case m := <-acks:
			_, err := handle(m)
			return err
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no flow ack after %d", acked)
		}
	}
	for i := 1; i <= n; i++ {
		op := 1
		if i == 1 {
			op = 0
		}
		m := &nats.Msg{Subject: subj + ".k", Data: payload, Header: nats.Header{},
			Reply: fmt.Sprintf("%s.%d.ok.%d.%d.$FI", inbox, flow, i, op)}
		switch kind {
		case "confirmation":
			asConfirmation(m, subj)
		case "ledger":
			// One write per key per ack window, so the expected sequence
			// is known: the key's last write was acknowledged.
			k := i % keys
			m.Subject = subj + ".team.k" + strconv.Itoa(k)
			if i > keys {
				m.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(revs[k], 10))
			}
			revs[k] = uint64(i) // stream sequence = batch sequence on a fresh stream
		}
		if err := nc.PublishMsg(m); err != nil {
			return err
		}
		for i == 1 && acked == 0 || uint64(i) >= acked+2*window {
			if err := wait(); err != nil {
				return err
			}
			if i == 1 {
				break
			}
		}
		for len(acks) > 0 {
			if _, err := handle(<-acks); err != nil {
				return err
			}
		}
	}
	eob := &nats.Msg{Subject: subj + ".k", Reply: fmt.Sprintf("%s.%d.ok.%d.3.$FI", inbox, flow, n+1)}
	if err := nc.PublishMsg(eob); err != nil {
		return err
	}
	for {
		select {
		case m := <-acks:
			done, err := handle(m)
			if err != nil || done {
				return err
			}
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no commit ack after %d", acked)
		}
	}
}

// fastGroups makes n confirmation writes as fast-ingest batches of size
// messages, inFlight/size batches at a time: the shape a group commit of
// concurrent confirmations would have. Each batch starts with a flow ack
// for its first message and ends with the PubAck of its committing last.
func fastGroups(nc *nats.Conn, subj string, payload []byte, n, size int) error {
	batchers := max(1, inFlight/size)
	total := int64(n / size)
	var claimed atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for g := 0; g < batchers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inbox := nc.NewInbox()
			replies := make(chan *nats.Msg, 64)
			sub, err := nc.ChanSubscribe(inbox+".>", replies)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer sub.Unsubscribe()
			for claimed.Add(1) <= total {
				id := nuid.Next()
				for i := 1; i <= size; i++ {
					op := 1
					switch i {
					case 1:
						op = 0
					case size:
						op = 2
					}
					m := &nats.Msg{Data: payload, Header: nats.Header{}, Reply: fmt.Sprintf("%s.%s.%d.ok.%d.%d.$FI", inbox, id, size, i, op)}
					asConfirmation(m, subj)
					if err := nc.PublishMsg(m); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				for done := false; !done; {
					select {
					case r := <-replies:
						var c struct {
							Type  string          `json:"type"`
							Error json.RawMessage `json:"error"`
						}
						if err := json.Unmarshal(r.Data, &c); err != nil || len(c.Error) > 0 || (c.Type != "" && c.Type != "ack") {
							firstErr.CompareAndSwap(nil, fmt.Errorf("batch reply %q", r.Data))
							return
						}
						done = c.Type == ""
					case <-time.After(10 * time.Second):
						firstErr.CompareAndSwap(nil, errors.New("no batch ack"))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	return loadErr(&firstErr)
}

// asConfirmation makes m a confirmation write, as
// worker.publishConfirmation makes one: a subject of its own (one message
// per subject) and Nats-Expected-Last-Subject-Sequence 0, no message id.
func asConfirmation(m *nats.Msg, subj string) {
	m.Subject = subj + ".team.key." + nuid.Next()
	m.Header.Set("Nats-Expected-Last-Subject-Sequence", "0")
}

// loadErr returns the first error a writer stored in v, or nil.
func loadErr(v *atomic.Value) error {
	err, _ := v.Load().(error)
	return err
}

func request(nc *nats.Conn, m *nats.Msg) (uint64, error) {
	r, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		return 0, err
	}
	var pa pubAck
	if err := json.Unmarshal(r.Data, &pa); err != nil {
		return 0, err
	}
	if pa.Error != nil {
		return 0, fmt.Errorf("publish refused: %s (%d)", pa.Error.Description, pa.Error.ErrCode)
	}
	return pa.Seq, nil
}
