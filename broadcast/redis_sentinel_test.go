package broadcast

import (
	"strings"
	"testing"
)

// The Sentinel URL: the primary's credentials in the user info, the
// Sentinels' in the query, several addresses, a master name and a
// database; every malformed one is refused with a reason that holds no
// password.
func TestParseSentinelURL(t *testing.T) {
	o, err := ParseSentinelURL("redis-sentinel://app:pr%2Fim@s1:26379,s2:26380,[::1]:26381,s4/mymaster/3?sentinel_username=sen&sentinel_password=s%40pw")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"s1:26379", "s2:26380", "[::1]:26381", "s4:26379"}
	if strings.Join(o.SentinelAddrs, " ") != strings.Join(want, " ") {
		t.Errorf("addresses %v, want %v", o.SentinelAddrs, want)
	}
	if o.MasterName != "mymaster" || o.DB != 3 || o.Username != "app" || o.Password != "pr/im" ||
		o.SentinelUsername != "sen" || o.SentinelPassword != "s@pw" || o.TLSConfig != nil {
		t.Errorf("parsed %+v", o)
	}
	o, err = ParseSentinelURL("rediss-sentinel://:p@ss@s1/m")
	if err != nil || o.TLSConfig == nil || o.Password != "p@ss" || o.DB != 0 || o.MasterName != "m" {
		t.Errorf("rediss-sentinel with an unescaped '@' in the password: %+v, %v", o, err)
	}
	for _, bad := range []string{
		"redis-sentinel://:Secret1@s1:26379",                 // no master
		"redis-sentinel://:Secret1@/m",                       // no sentinel
		"redis-sentinel://:Secret1@s1:port/m",                // bad port
		"redis-sentinel://:Secret1@s1/m/zero",                // bad db
		"redis-sentinel://:Secret1@s1/m?password=Secret1",    // unknown parameter
		"redis-sentinel://:Secret1%zz@s1/m",                  // bad escape
		"redis-sentinel://s1/m?sentinel_password=Secret1%zz", // bad escape in the query
		"redis://:Secret1@s1/m",                              // not a Sentinel URL
	} {
		_, err := ParseSentinelURL(bad)
		if err == nil {
			t.Errorf("%s: accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "Secret1") {
			t.Errorf("%s: the error shows the password: %v", bad, err)
		}
		if bad[:8] != "redis://" && CheckRedisURL(bad) == nil {
			t.Errorf("%s: CheckRedisURL accepts it", bad)
		}
	}
}
