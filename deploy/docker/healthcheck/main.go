// Command healthcheck is the HEALTHCHECK of keyrelay's FROM-scratch images
// (deploy/Dockerfile, deploy/docker/nats.Dockerfile), which have no shell,
// curl or wget. It GETs one URL and exits 0 on a 2xx answer and 1 on any
// other answer or error, printing the status and the start of the body
// (Docker keeps that output in `docker inspect`'s health log):
//
//	healthcheck http://127.0.0.1:9464/readyz
//
// The request times out after 3 seconds (the compose file's healthcheck
// timeout is longer).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// timeout bounds the whole request, body included.
const timeout = 3 * time.Second

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck URL")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func check(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %s (reading the body: %w)", url, resp.Status, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Printf("%s: %s\n", url, resp.Status)
	return nil
}
