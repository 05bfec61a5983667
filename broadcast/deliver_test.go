package broadcast

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/schema"
)

// Frames walcast builds itself read back whole through a client library,
// at each of the three header lengths (7-bit, 16-bit and 64-bit payload
// lengths) and at their edges.
func TestOwnFramesAtEveryLength(t *testing.T) {
	s := newTestServer(t, 0)
	c := connect(t, s, mint(t, 1, "admin"), "")
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 300 << 10} {
		s.seq++
		pos := schema.Position{LSN: 7000 + s.seq}
		head := `{"id":"` + pos.String() + `","pad":"`
		pad := strings.Repeat("y", max(0, n-len(head)-2))
		body := head + pad + `"}`
		if err := s.bus.Append(context.Background(), []schema.Message{{Pos: pos, Type: schema.TypeGuarantee, JSON: []byte(body)}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		typ, b, err := c.conn.Read(ctx)
		cancel()
		if err != nil {
			t.Fatalf("payload of %d bytes: %v", len(body), err)
		}
		if typ != websocket.MessageText || string(b) != body {
			t.Fatalf("payload of %d bytes came back as %d bytes of type %v", len(body), len(b), typ)
		}
	}
}

// A client that stops reading fills its socket: the worker hands the rest
// of its write to a goroutine of its own and goes on, so the others still
// get every message at once; the stalled one is closed (as too slow, or
// by the watchdog) and holds nothing after.
func TestStoppedReaderDoesNotHoldBackOthers(t *testing.T) {
	hub := NewHub(1 << 16)
	bus := NewMemoryBus(1<<16, hub)
	// The write timeout is what closes the stalled client; it is long
	// enough that a healthy client on a loaded machine (-race, other
	// packages' tests) is not taken for stalled; the healthy ones must
	// not wait for it meanwhile.
	srv, url := startServer(t, ServerConfig{Hub: hub, History: bus, WriteTimeout: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Watch(ctx)
	s := &testServer{url: url, bus: bus, hub: hub}
	_ = connect(t, s, mint(t, 1, "admin"), "") // never reads again
	healthy := make([]*wsc, 4)
	for i := range healthy {
		healthy[i] = connect(t, s, mint(t, int64(10+i), "admin"), "")
	}
	const n = 48
	big := strings.Repeat("x", 128<<10) // 6 MB in all: more than a socket holds
	var wg sync.WaitGroup
	errs := make(chan error, len(healthy))
	for _, h := range healthy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _, err := h.conn.Read(rctx)
				rcancel()
				if err != nil {
					errs <- fmt.Errorf("healthy client, message %d: %w", i, err)
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		s.seq++
		pos := schema.Position{LSN: 9000 + s.seq}
		bus.Append(context.Background(), []schema.Message{{Pos: pos, Type: schema.TypeGuarantee, JSON: []byte(`"` + big + `"`)}})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !eventually(10*time.Second, func() bool { return hub.Clients() == len(healthy) }) {
		t.Fatalf("%d clients connected, want the %d healthy ones: the stalled one was not closed", hub.Clients(), len(healthy))
	}
}

// BenchmarkDelivery measures the server's side of a delivery: b.N
// messages, one publish each, to n clients over loopback that read raw
// bytes and discard them (no client library, so what is counted is
// walcast's). It reports the allocations per delivery of the whole
// process (publishing included) and the wall time per delivery.
//
//	go test ./broadcast -run '^$' -bench Delivery -benchmem -benchtime 2000x
func BenchmarkDelivery(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) { benchDelivery(b, n) })
	}
}

func benchDelivery(b *testing.B, n int) {
	hub := NewHub(1 << 16)
	bus := NewMemoryBus(1<<16, hub)
	_, url := startBenchServer(b, hub, bus)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		conn := dialRaw(b, url, mint(b, int64(i), RoleAdmin))
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(io.Discard, conn)
		}()
		b.Cleanup(func() { conn.Close() })
	}
	payload := `{"id":"%d-0","type":"guarantee_update","action":"updated","table":"public.guarantee","data":{"id":7,"committee_id":3,"user_id":12,"status":"strong"},"timestamp":"2026-11-25T12:00:00.123456Z"}`
	msgs := make([][]schema.Message, b.N)
	for i := range msgs {
		msgs[i] = []schema.Message{{Pos: schema.Position{LSN: uint64(100 + i)}, Type: schema.TypeGuarantee, JSON: []byte(fmt.Sprintf(payload, 100+i))}}
	}
	want := hub.Stats().Delivered + uint64(n*b.N)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	start := time.Now()
	for i := range msgs {
		bus.Append(context.Background(), msgs[i])
		time.Sleep(50 * time.Microsecond) // a steady stream, not one burst
	}
	for hub.Stats().Delivered < want {
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	d := float64(n * b.N)
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/d, "allocs/delivery")
	b.ReportMetric(float64(el.Nanoseconds())/d, "ns/delivery")
	if s := hub.Stats(); s.SlowClosed > 0 {
		b.Errorf("%d clients closed as slow", s.SlowClosed)
	}
}

// dialRaw opens a WebSocket to url by hand and returns the connection
// after the handshake, for a reader of raw frames.
func dialRaw(b *testing.B, url, tok string) net.Conn {
	b.Helper()
	host := strings.TrimPrefix(url, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /ws?token=%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", tok, host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("upgrade: %v %v", resp, err)
	}
	if br.Buffered() > 0 { // the welcome: read with the rest
		return &bufferedConn{Conn: conn, r: br}
	}
	return conn
}

// bufferedConn reads what its reader buffered before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write ownership loses no wake-up: while another goroutine keeps taking
// the connection's writes (as the reader does for each client frame), the
// workers skip it and every published message still arrives, once, in
// order.
func TestBusyOwnerLosesNoWakeUp(t *testing.T) {
	hub := NewHub(1 << 12)
	srv := NewServer(ServerConfig{Hub: hub, Logger: discard()})
	server, clientSide := net.Pipe()
	defer clientSide.Close()
	c := &client{srv: srv, batch: newBatchConn(server), idx: -1}
	c.principal.Store(&Principal{Role: RoleAdmin, Expires: time.Now().Add(time.Hour)})
	hub.add(c)
	defer hub.remove(c)

	const n = 2000
	got := make(chan []string, 1)
	go func() {
		var ids []string
		r := bufio.NewReader(clientSide)
		for len(ids) < n {
			var h [2]byte
			if _, err := io.ReadFull(r, h[:]); err != nil {
				break
			}
			b := make([]byte, h[1]) // the test's payloads are under 126 bytes
			if _, err := io.ReadFull(r, b); err != nil {
				break
			}
			ids = append(ids, string(b))
		}
		got <- ids
	}()
	stop := make(chan struct{})
	busy := make(chan struct{})
	go func() { // the reader's part: take the writes, briefly, over and over
		defer close(busy)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.own.Lock()
			time.Sleep(10 * time.Microsecond)
			c.releaseAndServe()
			// A reader takes the writes once per client frame, and client
			// frames are rate-limited: it lets go between two. Retaking
			// them at once, forever, starves the worker (it only ever
			// tries, never waits), which is no lost wake-up but made this
			// test fail now and then.
			runtime.Gosched()
		}
	}()
	for i := 0; i < n; i++ {
		hub.Publish([]*schema.Message{{Pos: schema.Position{LSN: uint64(i + 1)}, Type: schema.TypeGuarantee, JSON: []byte(fmt.Sprint(i))}})
	}
	var ids []string
	select {
	case ids = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("not every message arrived: a wake-up was lost")
	}
	close(stop)
	<-busy
	for i, id := range ids {
		if id != fmt.Sprint(i) {
			t.Fatalf("message %d arrived as %q", i, id)
		}
	}
}
