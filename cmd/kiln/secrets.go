package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// secretResource is what kilnd tells of a secret: never its value.
type secretResource struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// maxSecret bounds a secret read from a file or stdin: secrets are keys
// and passwords, and a mistaken `< big.iso` should fail, not upload.
const maxSecret = 1 << 20

func (c *cli) secretsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "secrets",
		Aliases: []string{"secret"},
		Short:   "Manage an app's secrets (files at /run/secrets/NAME in the fns that name them)",
		Long: "A secret is a value kilnd keeps for an app, write-only: no command or API call\n" +
			"gives it back. A fn lists the secrets it gets (kiln fns update --secret NAME, or\n" +
			"secrets: in kiln.yaml); they appear in its containers as files /run/secrets/NAME,\n" +
			"not as environment variables.",
	}
	cmd.AddCommand(c.secretsCreateCmd(), c.secretsListCmd(), c.secretsDeleteCmd())
	return cmd
}

func (c *cli) secretsCreateCmd() *cobra.Command {
	var fromFile, fromLiteral string
	cmd := &cobra.Command{
		Use:     "create APP NAME [--from-file F | --from-literal V | < value]",
		Aliases: []string{"set", "update"},
		Short:   "Create or replace a secret",
		Long: "Create or replace a secret of APP. The value is the exact bytes of --from-file,\n" +
			"or of stdin (a trailing newline is kept: use printf, not echo), or --from-literal\n" +
			"(which lands in your shell history and in ps: prefer the others). The value is\n" +
			"sent to kilnd once and never printed.",
		Example: "  kiln secrets create shop db-password --from-file ./db-password.txt\n" +
			"  printf %s \"$PASSWORD\" | kiln secrets create shop db-password",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			value, err := c.secretValue(cmd, fromFile, fromLiteral)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			app, _, err := cl.appByName(ctx, args[0])
			if err != nil {
				return err
			}
			var s secretResource
			raw, err := cl.jsonCall(ctx, http.MethodPut, "/v2/apps/"+seg(app.ID)+"/secrets/"+seg(args[1]), nil,
				map[string]string{"value": value}, &s)
			if err != nil {
				return secretsRouteErr(err)
			}
			if c.structured() {
				return c.printRaw(raw)
			}
			verb := "created"
			if !s.CreatedAt.IsZero() && s.UpdatedAt.After(s.CreatedAt) {
				verb = "updated"
			}
			fmt.Fprintf(c.stdout, "secret %s %s in app %s (%d bytes); fns that name it get /run/secrets/%s\n", args[1], verb, app.Name, len(value), args[1])
			return nil
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file")
	cmd.Flags().StringVar(&fromLiteral, "from-literal", "", "the value itself (visible in shell history and ps)")
	cmd.MarkFlagsMutuallyExclusive("from-file", "from-literal")
	return cmd
}

// secretValue reads the value from where the flags say, stdin by default.
func (c *cli) secretValue(cmd *cobra.Command, fromFile, fromLiteral string) (string, error) {
	var data []byte
	switch {
	case cmd.Flags().Changed("from-literal"):
		fmt.Fprintln(c.stderr, "kiln: warning: --from-literal puts the secret in your shell history and in ps; --from-file or stdin do not")
		data = []byte(fromLiteral)
	case fromFile != "":
		f, err := os.Open(fromFile)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if data, err = io.ReadAll(io.LimitReader(f, maxSecret+1)); err != nil {
			return "", err
		}
	default:
		if isTerminal(c.stdin) {
			fmt.Fprintln(c.stderr, "kiln: reading the secret from stdin (it echoes); end with Ctrl-D, or use --from-file")
		}
		var err error
		if data, err = io.ReadAll(io.LimitReader(c.stdin, maxSecret+1)); err != nil {
			return "", fmt.Errorf("reading the secret from stdin: %w", err)
		}
	}
	if len(data) > maxSecret {
		return "", fmt.Errorf("the secret is over %d bytes", maxSecret)
	}
	if len(data) == 0 {
		return "", fmt.Errorf("the secret is empty: give --from-file FILE, or the value on stdin")
	}
	// The API carries the value as a JSON string.
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		return "", fmt.Errorf("the secret is not text: base64 it first (base64 -w0 FILE | kiln secrets create ...)")
	}
	return string(data), nil
}

func (c *cli) secretsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "list APP",
		Aliases:           []string{"ls"},
		Short:             "List an app's secrets (names and dates, never values)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			items, raw, err := listInto[secretResource](cmd.Context(), cl, "/v2/apps/"+seg(app.ID)+"/secrets", nil)
			if err != nil {
				return secretsRouteErr(err)
			}
			if c.structured() {
				return c.printItems(raw)
			}
			rows := make([][]string, 0, len(items))
			for _, s := range items {
				rows = append(rows, []string{s.Name, fmtTime(s.CreatedAt), fmtTime(s.UpdatedAt)})
			}
			return printTable(c.stdout, []string{"NAME", "CREATED", "UPDATED"}, rows)
		},
	}
}

func (c *cli) secretsDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete APP NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete a secret",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			raw, err := cl.jsonCall(cmd.Context(), http.MethodDelete, "/v2/apps/"+seg(app.ID)+"/secrets/"+seg(args[1]), nil, nil, nil)
			if err != nil {
				return secretsRouteErr(err)
			}
			return c.deleted("secret", args[1], raw)
		},
	}
}

// secretsRouteErr tells a kilnd without the secrets API (its router's
// plain 404) from a secret that is not there (kilnd's JSON 404).
func secretsRouteErr(err error) error {
	return routeErr(err, "secrets")
}

// routeErr explains a 404 that is the route missing rather than the thing:
// kilnd's own 404s carry a JSON message, its router's are plain text.
func routeErr(err error, what string) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound && (ae.Message == "" || ae.Message == "HTTP 404: 404 page not found") {
		return &noRouteError{what: what}
	}
	return err
}

// noRouteError is a kilnd without a route this kiln uses.
type noRouteError struct{ what string }

func (e *noRouteError) Error() string {
	return fmt.Sprintf("this kilnd has no %s API (it answered 404 for the route): it is older than this kiln", e.what)
}
