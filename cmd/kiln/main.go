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
	apiURL      string
	contextName string
	output      string
	// archive is set when the deprecated --output FILE of kiln build was
	// given where -o now means the output format.
	archiveCompat string
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

// Output formats of -o.
const (
	outTable = "table"
	outJSON  = "json"
	outYAML  = "yaml"
)

func (c *cli) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kiln",
		Short: "Manage and invoke functions on a kilnd server",
		Long: "kiln talks to kilnd's HTTP API. Which kilnd: --api-url, else KILN_API_URL, else the\n" +
			"current context (kiln context), else " + defaultAPIURL + ". When kilnd has an admin\n" +
			"token, set KILN_ADMIN_TOKEN or keep it in a context.\n\n" +
			"First steps:\n" +
			"  kiln init --runtime python hello && cd hello\n" +
			"  kiln deploy\n" +
			"  kiln invoke hello hello --body World",
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch c.output {
			case outTable, outJSON, outYAML:
				return nil
			}
			// kiln build --output FILE predates -o: keep it working, once
			// more, for scripts that still say it.
			if cmd.Name() == "build" && c.output != "" {
				fmt.Fprintf(c.stderr, "kiln: --output FILE is deprecated for kiln build; use --archive %s (-o is the output format now)\n", c.output)
				c.archiveCompat, c.output = c.output, outTable
				return nil
			}
			return fmt.Errorf("unknown output format %q: want table, json or yaml", c.output)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.apiURL, "api-url", "", "kilnd API URL (default: KILN_API_URL, else the current context, else "+defaultAPIURL+")")
	pf.StringVar(&c.contextName, "context", "", "context to use instead of the current one (env KILN_CONTEXT; see kiln context)")
	pf.StringVarP(&c.output, "output", "o", outTable, "output format: table, json or yaml")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outTable, outJSON, outYAML}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("context", c.completeContexts)
	root.AddCommand(
		c.initCmd(),
		c.deployCmd(),
		c.appsCmd(),
		c.fnsCmd(),
		c.triggersCmd(),
		c.secretsCmd(),
		c.tokensCmd(),
		c.invokeCmd(),
		c.logsCmd(),
		c.callsCmd(),
		c.imagesCmd(),
		c.buildCmd(),
		c.contextCmd(),
		c.versionCmd(),
	)
	return root
}

// client builds the API client from the global options, the environment
// and the context; commands call it in RunE so flag parsing has happened.
func (c *cli) client() (*client, error) {
	t, err := c.target()
	if err != nil {
		return nil, err
	}
	return newClient(t, c.httpClient)
}

func (c *cli) structured() bool { return c.output == outJSON || c.output == outYAML }
