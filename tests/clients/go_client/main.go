// go_client: the Go net/http client of the tests and of bench/go_overhead.py.
//
// It speaks HTTP/1.1 (TLSNextProto set to an empty map), or with -http2 net/http's own HTTP/2
// (offered by ALPN, and required of the answer). The CA comes from SSL_CERT_FILE, as
// crypto/x509 reads it on Linux.
//
//	go_client -url URL [-body JSON] [-header 'Name: value']... [-n COUNT] [-warmup COUNT]
//	          [-http2] [-serve-cert CERT -serve-key KEY]
//
// One request (POST when -body is given, else GET), repeated COUNT times on one keep-alive
// connection after -warmup untimed ones (and a pause, so that a sensor's verdict on the
// connection has landed); the last stdout line is a JSON summary with the timed loop's length.
// With -serve-cert/-serve-key the client first starts an HTTPS server of its own on 127.0.0.1
// (GET /small: two bytes; GET /big?bytes=N: N bytes) and sends the URL's path there: the
// benchmark's non-AI traffic with both ends in this one binary, so no other server sets the pace.
package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

// serveLocal starts the in-process server and returns its origin, https://127.0.0.1:PORT.
func serveLocal(cert, key string) string {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	chunk := bytes.Repeat([]byte("x"), 1<<16)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size := 2
		if r.URL.Path == "/big" {
			size, _ = strconv.Atoi(r.URL.Query().Get("bytes"))
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for size > 0 {
			n := size
			if n > len(chunk) {
				n = len(chunk)
			}
			w.Write(chunk[:n])
			size -= n
		}
	})
	server := &http.Server{Handler: handler, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	go server.ServeTLS(listener, cert, key)
	return "https://" + listener.Addr().String()
}

func main() {
	url := flag.String("url", "", "request URL")
	body := flag.String("body", "", "request body (POST when given)")
	count := flag.Int("n", 1, "requests to send, one after the other")
	warmup := flag.Int("warmup", 0, "untimed requests first (bench/go_overhead.py)")
	var extra headers
	flag.Var(&extra, "header", "extra request header 'Name: value' (repeatable)")
	serveCert := flag.String("serve-cert", "", "serve HTTPS in-process with this certificate (PEM)")
	serveKey := flag.String("serve-key", "", "the certificate's key (PEM)")
	http2 := flag.Bool("http2", false, "speak HTTP/2 (net/http's bundled client) instead of HTTP/1.1")
	flag.Parse()
	if *serveCert != "" {
		parsed, err := neturl.Parse(*url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		*url = serveLocal(*serveCert, *serveKey) + parsed.RequestURI()
	}

	transport := &http.Transport{ForceAttemptHTTP2: *http2}
	wantMajor := 2
	if !*http2 {
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		wantMajor = 1
	}
	client := &http.Client{Timeout: 60 * time.Second, Transport: transport}
	var last []byte
	status := 0
	var start time.Time
	for i := 0; i < *warmup+*count; i++ {
		if i == *warmup {
			if *warmup > 0 {
				time.Sleep(200 * time.Millisecond)
			}
			start = time.Now()
		}
		method := "GET"
		var reader io.Reader
		if *body != "" {
			method = "POST"
			reader = bytes.NewBufferString(*body)
		}
		req, err := http.NewRequest(method, *url, reader)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if *body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for _, h := range extra {
			name, value, ok := strings.Cut(h, ":")
			if !ok {
				fmt.Fprintln(os.Stderr, "bad header:", h)
				os.Exit(2)
			}
			req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		last, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		status = resp.StatusCode
		if resp.ProtoMajor != wantMajor {
			fmt.Fprintf(os.Stderr, "answered in %s, not HTTP/%d\n", resp.Proto, wantMajor)
			os.Exit(1)
		}
	}
	elapsed := time.Since(start)
	digest := sha256.Sum256(last)
	summary := map[string]interface{}{
		"status":      status,
		"requests":    *count,
		"body_sha256": hex.EncodeToString(digest[:]),
		"body_bytes":  len(last),
		"elapsed_ns":  elapsed.Nanoseconds(),
	}
	var parsed interface{}
	if json.Unmarshal(last, &parsed) == nil {
		summary["body"] = parsed
	}
	out, _ := json.Marshal(summary)
	fmt.Println(string(out))
}
