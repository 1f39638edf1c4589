// Command kiln is the command-line client of kilnd: it manages apps, fns
// and triggers, invokes fns, reads calls and their logs, and builds and
// imports function images. Everything except build talks to kilnd's HTTP
// API; build compiles and packs images locally, without Docker.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is stamped at link time, as the Makefile does:
// -ldflags "-X main.Version=v1.2.3".
var Version = "dev"

const defaultAPIURL = "http://127.0.0.1:8080"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, env{
		args:   os.Args[1:],
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
	})
	stop()
	os.Exit(code)
}

// env is everything the CLI takes from its process, so tests can run it
// in-process against a fake server.
type env struct {
	args           []string
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	httpClient     *http.Client
}

// cli holds the global options and I/O of one run; commands hang off it.
type cli struct {
	env
	apiURL string
	output string
}

// errSilent is returned by commands that already told the user what went
// wrong (invoke printing a failed response) and only need the exit status.
var errSilent = errors.New("silent failure")

func run(ctx context.Context, e env) int {
	if e.getenv == nil {
		e.getenv = func(string) string { return "" }
	}
	if e.stdin == nil {
		e.stdin = eofReader{}
	}
	c := &cli{env: e}
	root := c.rootCmd()
	root.SetArgs(e.args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if !errors.Is(err, errSilent) {
		fmt.Fprintf(e.stderr, "Error: %v\n", err)
	}
	return 1
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

func (c *cli) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kiln",
		Short: "Manage and invoke functions on a kilnd server",
		Long: "kiln talks to kilnd's HTTP API (KILN_API_URL, default " + defaultAPIURL + ").\n" +
			"When kilnd has an admin token, set KILN_ADMIN_TOKEN.",
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch c.output {
			case "table", "json":
				return nil
			}
			return fmt.Errorf("unknown output format %q: want table or json", c.output)
		},
	}
	apiURL := c.getenv("KILN_API_URL")
	if apiURL == "" {
		apiURL = defaultAPIURL
	}
	root.PersistentFlags().StringVar(&c.apiURL, "api-url", apiURL, "kilnd API URL (env KILN_API_URL)")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	root.AddCommand(
		c.appsCmd(),
		c.fnsCmd(),
		c.triggersCmd(),
		c.tokensCmd(),
		c.invokeCmd(),
		c.callsCmd(),
		c.imagesCmd(),
		c.buildCmd(),
		c.versionCmd(),
	)
	return root
}

// client builds the API client from the global options; commands call it
// in RunE so flag parsing has happened.
func (c *cli) client() (*client, error) {
	return newClient(c.apiURL, c.getenv("KILN_ADMIN_TOKEN"), c.httpClient)
}

func (c *cli) jsonOutput() bool { return c.output == "json" }
