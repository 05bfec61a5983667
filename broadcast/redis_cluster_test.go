package broadcast

import (
	"strings"
	"testing"
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
