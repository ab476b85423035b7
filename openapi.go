// openapi.go: the OpenAPI 3.1 description of the API. openapi.yaml is the
// source; openapi.json.gz is the same document as compact JSON, gzipped (a
// test, TestOpenAPIJSONIsTheYAML, keeps them equal), embedded, served at
// /openapi.json, and printed by usersvc openapi.
package main

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"net/http"

	"github.com/cespare/xxhash/v2"
)

// openapiGzip is the document as built in: gzipped it takes 41 KB less
// of the binary, which .ci/run holds under 20 MiB (the gzip reader is in
// it anyway, for net/http and /metrics).
//
//go:embed openapi.json.gz
var openapiGzip []byte

// openapiJSON is the document, unzipped once at start.
var openapiJSON = gunzip(openapiGzip, "the built-in OpenAPI document")

// gunzip is the content of the gzip stream b, which the build embedded: a
// stream that does not unzip is a broken build, not a condition to serve.
func gunzip(b []byte, what string) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err == nil {
		b, err = io.ReadAll(zr)
	}
	if err != nil {
		panic(fmt.Sprintf("%s: %v", what, err))
	}
	return b
}

// openapiETag is the document's ETag: its content's hash.
var openapiETag = `"` + hex16(xxhash.Sum64(openapiJSON)) + `"`

// handleOpenAPI serves GET /openapi.json: the document, open without the
// token (it holds no data), cacheable with its ETag.
func handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	writeCacheable(w, r, http.StatusOK, openapiJSON, openapiETag)
}
