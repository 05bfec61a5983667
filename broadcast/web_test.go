package broadcast

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func webGet(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestWebHandlerServesTheDashboardAndClient(t *testing.T) {
	srv := httptest.NewServer(WebHandler())
	defer srv.Close()

	for _, tc := range []struct {
		path, contentType, contains string
		cors                        bool
	}{
		{"/", "text/html", `import { WalcastClient, compareIds, decodeToken } from "./client.js"`, false},
		{"/client.js", "text/javascript", "export class WalcastClient", true},
		{"/client.d.ts", "text/plain", "export declare class WalcastClient", true},
	} {
		resp, body := webGet(t, srv.URL+tc.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", tc.path, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.contentType) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.contentType)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); (got == "*") != tc.cors {
			t.Errorf("GET %s: Access-Control-Allow-Origin %q, want * only for the client", tc.path, got)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", tc.path, got)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", tc.path, got)
		}
		// Revalidation is cheap: the ETag makes it a 304.
		tag := resp.Header.Get("ETag")
		if tag == "" {
			t.Errorf("GET %s: no ETag", tc.path)
			continue
		}
		if resp, _ := webGet(t, srv.URL+tc.path, "If-None-Match", tag); resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match = %d, want 304", tc.path, resp.StatusCode)
		}
	}

	if resp, _ := webGet(t, srv.URL+"/no-such-file.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /no-such-file.js = %d, want 404", resp.StatusCode)
	}
}

// Every local file the page loads (scripts, modules it imports, styles,
// images) is embedded and served.
func TestWebDashboardReferencesOnlyServedFiles(t *testing.T) {
	srv := httptest.NewServer(WebHandler())
	defer srv.Close()
	_, page := webGet(t, srv.URL+"/")
	_, client := webGet(t, srv.URL+"/client.js")
	ref := regexp.MustCompile(`(?:from\s+|import\s*\(\s*|src=|href=)["'](\./[^"']+|/[^/"'][^"']*)["']`)
	seen := 0
	for _, text := range []string{page, client} {
		for _, m := range ref.FindAllStringSubmatch(text, -1) {
			seen++
			p := "/" + strings.TrimPrefix(strings.TrimPrefix(m[1], "./"), "/")
			if resp, _ := webGet(t, srv.URL+p); resp.StatusCode != http.StatusOK {
				t.Errorf("the dashboard loads %s, which is served with %d", m[1], resp.StatusCode)
			}
		}
	}
	if seen == 0 {
		t.Fatal("found no local reference in the page: the pattern is out of date")
	}
}
