package broadcast

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// webFiles are the live dashboard (index.html) and the browser client
// (client.js, with its TypeScript declarations client.d.ts). broadcast/web
// is also the npm package @walcast/client, so /client.js is the package's
// own file; the folder's other files (package.json, the Node tests,
// node_modules) are named out, not embedded.
//
//go:embed web/index.html web/client.js web/client.d.ts
var webFiles embed.FS

// WebHandler serves the embedded web folder by file name: the live
// dashboard at "/", the browser client at "/client.js" and
// "/client.d.ts". It needs no configuration: the page reads its token from
// the URL fragment (#token=…) or a login box and opens /ws on the same host.
//
// The client may be imported straight from walcast by an application on
// another origin (`import { WalcastClient } from "https://walcast…/client.js"`),
// which module scripts do with CORS, so client files allow any origin:
// they are public and hold no secrets.
func WebHandler() http.Handler {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the folder is embedded: cannot happen
	}
	etags := webETags(sub)
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The files change with walcast: browsers revalidate, and the ETag
		// (embedded files have no modification time) makes that a 304.
		h.Set("Cache-Control", "no-cache")
		name := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		if name == "" {
			name = "index.html"
		}
		if tag, ok := etags[name]; ok {
			h.Set("ETag", tag)
		}
		h.Set("X-Content-Type-Options", "nosniff")
		switch {
		case strings.HasSuffix(r.URL.Path, ".d.ts"):
			// mime.TypeByExtension would say .ts is a video or a Qt file.
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("Access-Control-Allow-Origin", "*")
		case strings.HasSuffix(r.URL.Path, ".js"):
			h.Set("Access-Control-Allow-Origin", "*")
		}
		files.ServeHTTP(w, r)
	})
}

// webETags hashes every embedded file, by its path in fsys.
func webETags(fsys fs.FS) map[string]string {
	tags := map[string]string{}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		tags[name] = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
		return nil
	})
	if err != nil {
		panic(err) // the files are embedded: cannot happen
	}
	return tags
}
