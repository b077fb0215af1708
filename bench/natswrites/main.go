// Command natswrites measures what one stored JetStream write of each kind
// the worker makes costs nats-server, against a plain publish measured in
// the same run: the figures behind the pipeline's write budget
// (BENCHMARKS.md, "What each stored write costs").
//
// Kinds, each a request that waits for its PubAck, 64 in flight:
//   - plain: one subject, no headers (the baseline);
//   - msgid: plus Nats-Msg-Id (the events and confirmations streams dedupe);
//   - confirmation: a new subject per message, one message per subject,
//     Nats-Expected-Last-Subject-Sequence 0 and Nats-Msg-Id, as
//     worker.publishConfirmation;
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
//     servers' processes only: lost when every replica's process is).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
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
		for _, kind := range []string{"plain", "msgid", "confirmation", "ledger", "ledger-batch", "intent", "intent-mem"} {
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
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
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
					id := "team.key." + nuid.Next()
					m.Subject = subj + "." + id
					m.Header.Set("Nats-Msg-Id", id)
					m.Header.Set("Nats-Expected-Last-Subject-Sequence", "0")
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
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
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
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
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
