package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) tokensCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "tokens",
		Aliases: []string{"token"},
		Short:   "Issue tokens for private fns (annotation kiln.io/private)",
	}
	cmd.AddCommand(c.tokensCreateCmd())
	return cmd
}

type tokenResource struct {
	Token     string `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

func (c *cli) tokensCreateCmd() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create APP [FN]",
		Short: "Create a token to call a private fn, or every fn of an app",
		Long: "Prints a token for Authorization: Bearer TOKEN on calls to a private fn.\n" +
			"Without FN the token is good for every fn of APP. Tokens cannot be revoked\n" +
			"one by one: keep --ttl short. (-o json prints the expiry too.)",
		Example:           `  curl -H "Authorization: Bearer $(kiln tokens create myapp hello --ttl 10m)" ...`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := map[string]any{}
			if cmd.Flags().Changed("ttl") {
				// The API counts whole seconds; rounding would hand out a
				// token that lives longer or shorter than asked.
				if ttl < time.Second || ttl%time.Second != 0 {
					return fmt.Errorf("bad --ttl %s: want whole seconds, at least 1s (e.g. 90s, 10m, 720h)", ttl)
				}
				body["ttl"] = int64(ttl / time.Second)
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
			body["app_id"] = app.ID
			if len(args) == 2 {
				fn, _, err := cl.fnByName(ctx, app, args[1])
				if err != nil {
					return err
				}
				body["fn_id"] = fn.ID
			}
			var tok tokenResource
			raw, err := cl.jsonCall(ctx, http.MethodPost, "/v2/tokens", nil, body, &tok)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printRaw(raw)
			}
			if tok.Token == "" {
				return fmt.Errorf("kilnd answered without a token: %s", raw)
			}
			// Only the token on stdout, so $(kiln tokens create ...) works.
			_, err = fmt.Fprintln(c.stdout, tok.Token)
			return err
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 720h)")
	return cmd
}
