package broadcast

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

func TestParseClusterURL(t *testing.T) {
	o, err := ParseClusterURL("redis-cluster://walcast:s%40cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002/0?dial_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1:7000", "10.0.0.2:7001", "[::1]:7002"}; strings.Join(o.Addrs, " ") != strings.Join(want, " ") {
		t.Errorf("addrs %v, want %v", o.Addrs, want)
	}
	if o.Username != "walcast" || o.Password != "s@cret" || o.TLSConfig != nil || o.DialTimeout.String() != "3s" {
		t.Errorf("user %q password %q tls %v dial_timeout %v", o.Username, o.Password, o.TLSConfig != nil, o.DialTimeout)
	}
	o, err = ParseClusterURL("rediss-cluster://:pw@h:6379")
	if err != nil || o.TLSConfig == nil || o.Password != "pw" || len(o.Addrs) != 1 {
		t.Errorf("rediss-cluster: %+v, %v", o, err)
	}
	for _, bad := range []string{
		"redis://h:6379",
		"redis-cluster://",
		"redis-cluster://h",
		"redis-cluster://h:6379,h2",
		"redis-cluster://h:6379,:6380",
		"redis-cluster://h:6379,h2:port",
		"redis-cluster://h:6379/1",
		"redis-cluster://h:6379?dial_timeout=soon",
		"redis-cluster://h:6379?bogus=1",
		"redis-cluster://:secret%zz@h:6379",
	} {
		_, err := ParseClusterURL(bad)
		if err == nil {
			t.Errorf("%s: accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error quotes the password: %v", bad, err)
		}
	}
}

// Every key walcast derives from the stream key hashes to the stream's
// slot in a cluster, and a key that holds a tag keeps it.
func TestClusterKeyOneSlot(t *testing.T) {
	for key, want := range map[string]string{
		"walcast:changes": "{walcast:changes}",
		"app:{x}:changes": "app:{x}:changes",
		"odd{}key":        "{odd{}key}",
	} {
		if got := clusterKey(key); got != want {
			t.Errorf("clusterKey(%q) = %q, want %q", key, got, want)
		}
	}
	bus, err := NewRedisBus(RedisConfig{URL: "redis-cluster://127.0.0.1:7000,127.0.0.1:7001"})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if bus.key != "{walcast:changes}" {
		t.Errorf("cluster stream key %q", bus.key)
	}
	l := bus.PresenceLink(NewPresence(), 0)
	keys := []string{bus.key, bus.dashboardKey(), bus.dashboardIDsKey(), bus.originKey(), bus.waitKey(),
		l.hashKey("r1"), l.replicasKey(), l.channel, l.typingCh}
	for _, k := range keys {
		if hashTag(k) != "walcast:changes" {
			t.Errorf("%s is not in the slot of %s", k, bus.key)
		}
	}
	plain, err := NewRedisBus(RedisConfig{URL: "redis://127.0.0.1:6379/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.key != DefaultStreamKey {
		t.Errorf("a single Redis changed its stream key to %q", plain.key)
	}
}

// hashTag is the part of a key Redis Cluster hashes: the text between the
// first '{' and the next '}' when not empty, else the whole key.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key[open+1 : open+1+end]
		}
	}
	return key
}

// Against a Redis Cluster, two replicas share the stream, the newest
// dashboards and presence: every key in one slot, so the append script,
// the epoch's transaction and presence's pipelines run; all of it lives
// on the primary that owns the slot.
func TestRedisClusterBusAndPresence(t *testing.T) {
	rc := testenv.StartRedisCluster(t)
	ra, rb := startReplica(t, rc.URL()), startReplica(t, rc.URL())
	appendMsg := followingBoth(t, ra, rb)
	if err := ra.bus.NewEpoch(context.Background(), schema.Origin{SystemID: "1", Timeline: 1, Slot: "walcast"}, "test"); err != nil {
		t.Fatalf("new epoch in a cluster: %v", err)
	}
	x := dialProbe(t, ra.url, "x", mint(t, 1, "supervisor", 7), "")
	y := dialProbe(t, rb.url, "y", mint(t, 2, "", 7), "")
	appendMsg(schema.Message{Type: schema.TypeGuarantee, Committee: 7, HasCommittee: true}, "row")
	appendMsg(schema.Message{Type: schema.TypeVoting}, "end")
	end := func(f []byte) bool { return frameJSON(f)["tag"] == "end" }
	if got := strings.Join(tags(y.until(end)), "|"); got != "row|end" {
		t.Errorf("replica B received %s", got)
	}
	x.until(end)
	x.send(`{"type":"presence","viewing":"x"}`)
	y.send(`{"type":"presence","viewing":"y"}`)
	x.waitView("1:supervisor[x] 2:[y]")
	y.waitView("1:supervisor[x] 2:[y]")

	// The primary that owns the slot crashes: presence goes on through
	// the promoted replica.
	at := time.Now()
	rc.KillOwner(t, "{walcast:changes}")
	promoted := time.Since(at)
	z := dialProbe(t, rb.url, "z", mint(t, 3, "", 7), "")
	z.send(`{"type":"presence","viewing":"z"}`)
	x.waitView("1:supervisor[x] 2:[y] 3:[z]")
	t.Logf("replica promoted %v after the crash; presence across replicas again %v after it", promoted.Round(time.Millisecond), time.Since(at).Round(time.Millisecond))

	owner := rc.Owner(t, "{walcast:changes}")
	keys := owner.Do(t, "KEYS", "*")
	for _, k := range keys.([]any) {
		if hashTag(k.(string)) != "walcast:changes" {
			t.Errorf("key %s outside walcast's hash tag", k)
		}
	}
	t.Logf("keys on the slot's primary %s: %v", owner.Addr(), keys)

	// A plain redis:// URL at a cluster node is refused with the fix.
	plain, err := NewRedisBus(RedisConfig{URL: owner.URL(), Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var be *BusError
	if err := plain.Check(context.Background()); !errors.As(err, &be) || !strings.Contains(be.Fix, "redis-cluster://") {
		t.Errorf("Check of a cluster node through redis://: %v", err)
	}
}

// A cluster whose nodes want a password: the URL's password reaches every
// node, and a wrong one stops walcast at start with the fix.
func TestRedisClusterPassword(t *testing.T) {
	rc := testenv.StartRedisCluster(t, testenv.ClusterNodes(testenv.WithRedisArgs("--requirepass", "clu-pw", "--masterauth", "clu-pw")))
	hosts := strings.TrimPrefix(rc.URL(), "redis-cluster://")
	ctx := context.Background()
	bus, err := NewRedisBus(RedisConfig{URL: "redis-cluster://:clu-pw@" + hosts, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.Check(ctx); err != nil {
		t.Fatalf("check with the right password: %v", err)
	}
	m := schema.Message{Pos: schema.Position{LSN: 7}, Type: schema.TypeVoting, JSON: []byte(`{}`)}
	if err := bus.Append(ctx, []schema.Message{m}); err != nil {
		t.Fatalf("append: %v", err)
	}
	if head, err := bus.Head(ctx); err != nil || head != m.Pos {
		t.Fatalf("head %v, %v; want %v", head, err, m.Pos)
	}
	wrong, err := NewRedisBus(RedisConfig{URL: "redis-cluster://:nope@" + hosts, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	var be *BusError
	if err := wrong.Check(ctx); !errors.As(err, &be) || !strings.Contains(be.Problem, "authentication") || !strings.Contains(be.Fix, "redis-cluster://") {
		t.Errorf("check with a wrong password: %v", err)
	}
}
