// openapi_doc_test.go: openapi.json is openapi.yaml as JSON, and the
// server serves it. (openapi_test.go checks every response against it.)
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

var updateOpenAPI = flag.Bool("update-openapi", false, "rewrite openapi.json.gz from openapi.yaml")

// yamlToJSON converts a YAML document to compact JSON, keeping the order of
// its keys (the reader of openapi.json sees openapi.yaml's order). Compact:
// it is embedded in the binary, where indentation took a third of its 76
// KB; openapi.yaml is the document to read, and a client formats JSON.
func yamlToJSON(src []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := writeYAMLNode(&b, doc.Content[0]); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b.Bytes()); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// writeYAMLNode writes n as JSON.
func writeYAMLNode(b *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			b.Write(k)
			b.WriteByte(':')
			if err := writeYAMLNode(b, n.Content[i+1]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeYAMLNode(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return err
		}
		if n.Tag == "!!str" {
			v = n.Value // keep strings as written ("1.0.0", "200")
		}
		j, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(j)
	case yaml.AliasNode:
		return writeYAMLNode(b, n.Alias)
	default:
		return fmt.Errorf("yaml node kind %d at line %d", n.Kind, n.Line)
	}
	return nil
}

func TestOpenAPIJSONIsTheYAML(t *testing.T) {
	src, err := os.ReadFile("openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want, err := yamlToJSON(src)
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if *updateOpenAPI {
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(want) //nolint:errcheck // into memory
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("openapi.json.gz", gz.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(openapiJSON, want) {
		t.Fatal("openapi.json.gz is not openapi.yaml as JSON: run go test -run TestOpenAPIJSONIsTheYAML -update-openapi .")
	}
}

func TestOpenAPIIsServedAndPrinted(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "GET", "/openapi.json", "")
	expect(t, "GET /openapi.json", r, 200)
	if !bytes.Equal(r.body, openapiJSON) || r.header.Get("ETag") == "" {
		t.Fatalf("/openapi.json: %d bytes, ETag %q", len(r.body), r.header.Get("ETag"))
	}
	var doc map[string]any
	if err := json.Unmarshal(r.body, &doc); err != nil || doc["openapi"] != "3.1.0" {
		t.Fatalf("not an OpenAPI 3.1 document: %v", err)
	}
	nm := ts.do(t, "GET", "/openapi.json", "", "If-None-Match", r.header.Get("ETag"))
	if nm.status != 304 {
		t.Fatalf("If-None-Match: %d, want 304", nm.status)
	}
	cfg := testConfig()
	cfg.token = "a-token-of-sixteen-plus"
	tok := newTestServerWith(t, cfg)
	expect(t, "/openapi.json without the token", tok.do(t, "GET", "/openapi.json", ""), 200)
	var out bytes.Buffer
	if err := run(t.Context(), []string{"usersvc", "openapi"}, envOf(), &out, &out); err != nil || !bytes.Equal(out.Bytes(), openapiJSON) {
		t.Fatalf("usersvc openapi: %v, %d bytes", err, out.Len())
	}
	if n, _ := strconv.Atoi(r.header.Get("Content-Length")); n != len(openapiJSON) {
		t.Fatalf("Content-Length %d", n)
	}
}
