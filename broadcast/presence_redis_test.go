package broadcast

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// replica is one serve process: a hub following the Redis stream, presence
// linked through Redis, and a WebSocket server on a real listener.
type replica struct {
	url string
	hub *Hub
	bus *RedisBus
	pr  *Presence
}

func startReplica(t *testing.T, redisURL string) *replica {
	t.Helper()
	return startReplicaTTL(t, redisURL, 3*time.Second)
}

// startReplicaTTL starts a replica whose presence outlives it by ttl.
func startReplicaTTL(t *testing.T, redisURL string, ttl time.Duration) *replica {
	t.Helper()
	bus, err := NewRedisBus(RedisConfig{URL: redisURL, History: 10000, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	hub := NewHub(0)
	pr := NewPresence()
	link := bus.PresenceLink(pr, ttl)
	v, _ := NewVerifier(AuthConfig{Secret: secret})
	srv := NewServer(ServerConfig{Hub: hub, History: bus, Verifier: v, Presence: pr, Logger: discard()})
	hs := newHTTPServer(srv)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = link.Run(ctx) }()
	go func() { defer wg.Done(); _ = bus.Follow(ctx, hub) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(sctx)
		scancel()
		hs.Close()
		cancel()
		wg.Wait()
		bus.Close()
	})
	return &replica{url: hs.URL, hub: hub, bus: bus, pr: pr}
}

// followingBoth waits until both replicas follow the stream (a warm-up
// message reaches both hubs) and returns a function that appends a
// message, tagged, through ra's bus.
func followingBoth(t *testing.T, ra, rb *replica) func(m schema.Message, tag string) {
	t.Helper()
	lsn := uint64(100)
	appendMsg := func(m schema.Message, tag string) {
		t.Helper()
		lsn++
		m.Pos = schema.Position{LSN: lsn}
		m.JSON = []byte(fmt.Sprintf(`{"id":%q,"type":%q,"tag":%q}`, m.Pos, m.Type, tag))
		if err := ra.bus.Append(context.Background(), []schema.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for ra.hub.Stats().Published == 0 || rb.hub.Stats().Published == 0 {
		if time.Now().After(deadline) {
			t.Fatal("replicas do not follow the stream")
		}
		appendMsg(schema.Message{Type: schema.TypeVoting, AdminOnly: true}, "warm-up")
		time.Sleep(20 * time.Millisecond) // polling for readiness, not waiting it out
	}
	return appendMsg
}

// Across two replicas sharing a real Redis: ids above 2^53 stay exact in
// the stream, in presence and in typing; an auth frame on one replica
// that drops a committee takes the connection out of that committee's
// presence on the other, and its typing and presence stop reaching it.
func TestPresenceAcrossReplicasFollowsAuthWithExactIDs(t *testing.T) {
	rd := testenv.StartRedis(t)
	ra, rb := startReplica(t, rd.URL()), startReplica(t, rd.URL())
	const shared = 7
	appendMsg := followingBoth(t, ra, rb)

	x := dialProbe(t, ra.url, "x", mint(t, bigA, "supervisor", bigA, shared), "")
	y := dialProbe(t, rb.url, "y", mint(t, bigB, "", shared), "")
	z := dialProbe(t, rb.url, "z", mint(t, 3, "", bigA), "")

	// Rows routed through the Redis stream by exact owner and committee.
	appendMsg(schema.Message{Type: schema.TypeGuarantee, Owner: bigA, HasOwner: true}, "row of A")
	appendMsg(schema.Message{Type: schema.TypeGuarantee, Owner: bigB, HasOwner: true}, "row of B")
	appendMsg(schema.Message{Type: schema.TypeGuarantee, Committee: bigB, HasCommittee: true}, "committee B")
	appendMsg(schema.Message{Type: schema.TypeVoting}, "end")
	end := func(f []byte) bool { return frameJSON(f)["tag"] == "end" }
	if got := strings.Join(tags(x.until(end)), "|"); got != "row of A|end" {
		t.Errorf("user 2^53+1 on replica A received %s", got)
	}
	if got := strings.Join(tags(y.until(end)), "|"); got != "row of B|end" {
		t.Errorf("user 2^53 on replica B received %s", got)
	}
	z.until(end)

	x.send(`{"type":"presence","viewing":"x"}`)
	y.send(`{"type":"presence","viewing":"y"}`)
	z.send(`{"type":"presence","viewing":"z"}`)
	x.waitView("3:[z] 9007199254740992:[y] 9007199254740993:supervisor[x]")
	y.waitView("9007199254740992:[y] 9007199254740993:supervisor[x]")
	z.waitView("3:[z] 9007199254740993:supervisor[x]")

	// x drops the shared committee: y, on the other replica, loses it.
	x.send(`{"type":"auth","token":"` + mint(t, bigA, "supervisor", bigA) + `"}`)
	for frameType(x.next()) != "auth_ok" {
	}
	x.waitView("3:[z] 9007199254740993:supervisor[x]")
	y.waitView("9007199254740992:[y]")

	// y's presence and typing no longer reach x; z's typing does, with
	// its id. y's frames are relayed first, through the same Redis
	// channel, so they would arrive before z's.
	y.send(`{"type":"presence","viewing":"y2"}`)
	y.send(`{"type":"typing","target":"t-y"}`)
	y.sync()
	z.send(`{"type":"typing","target":"t-z"}`)
	for _, f := range x.until(func(f []byte) bool { return frameType(f) == "typing" }) {
		if strings.Contains(string(f), "9007199254740992") || strings.Contains(string(f), "t-y") {
			t.Errorf("x received %s after dropping the shared committee", f)
		} else if frameType(f) == "typing" && !strings.Contains(string(f), `"user_id":3,"target":"t-z"`) {
			t.Errorf("typing frame %s, want z's", f)
		}
	}
	// z, sharing committee 2^53+1, hears x's typing with the exact id.
	x.send(`{"type":"typing","target":"t-x"}`)
	for _, f := range z.until(func(f []byte) bool { return frameType(f) == "typing" }) {
		if frameType(f) == "typing" && !strings.Contains(string(f), `"user_id":9007199254740993,`) {
			t.Errorf("typing frame %s, want user_id 9007199254740993", f)
		}
	}
}
