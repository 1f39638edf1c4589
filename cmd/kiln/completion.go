package main

import (
	"context"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completeAppFn completes the APP and FN arguments most commands start
// with, asking kilnd for the names: the first argument is an app, the
// second (when n is 2) a fn of it. cobra's own `kiln completion SHELL`
// prints the script that calls this.
func (c *cli) completeAppFn(n int) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= n {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		// A shell waits for completions: a kilnd that does not answer
		// quickly gets no say.
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
		defer cancel()
		cl, err := c.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var names []string
		if len(args) == 0 {
			apps, _, err := listInto[appResource](ctx, cl, "/v2/apps", nil)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
			}
			for _, a := range apps {
				names = append(names, a.Name)
			}
		} else {
			app, _, err := cl.appByName(ctx, args[0])
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
			}
			fns, _, err := listInto[fnResource](ctx, cl, "/v2/fns", url.Values{"app_id": {app.ID}})
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
			}
			for _, f := range fns {
				names = append(names, f.Name)
			}
		}
		out := names[:0]
		for _, nm := range names {
			if strings.HasPrefix(nm, toComplete) {
				out = append(out, nm)
			}
		}
		sort.Strings(out)
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
