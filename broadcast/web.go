package broadcast

import (
	"embed"
	"io/fs"
	"net/http"
)

// webFiles is the live dashboard page served at "/".
//
//go:embed web
var webFiles embed.FS

// WebHandler serves the embedded live dashboard: index.html at "/" and the
// other files of the web folder by name. It needs no configuration: the page
// reads its token from the URL fragment (#token=…) or a login box and opens
// /ws on the same host.
func WebHandler() http.Handler {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the folder is embedded: cannot happen
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page changes with walcast; never serve a stale copy.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
