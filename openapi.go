// openapi.go: the OpenAPI 3.1 description of the API. openapi.yaml is the
// source; openapi.json is the same document as JSON (a test,
// TestOpenAPIJSONIsTheYAML, keeps them equal), embedded and served at
// /openapi.json, and printed by usersvc openapi.
package main

import (
	_ "embed"
	"net/http"

	"github.com/cespare/xxhash/v2"
)

//go:embed openapi.json
var openapiJSON []byte

// openapiETag is the document's ETag: its content's hash.
var openapiETag = `"` + hex16(xxhash.Sum64(openapiJSON)) + `"`

// handleOpenAPI serves GET /openapi.json: the document, open without the
// token (it holds no data), cacheable with its ETag.
func handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	writeCacheable(w, r, http.StatusOK, openapiJSON, openapiETag)
}
