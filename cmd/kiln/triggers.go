package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

func (c *cli) triggersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "triggers",
		Aliases: []string{"trigger", "tr"},
		Short:   "Manage triggers: paths under /t/APP/ that invoke a fn",
	}
	cmd.AddCommand(c.triggersCreateCmd(), c.triggersListCmd(), c.triggersDeleteCmd())
	return cmd
}

func (c *cli) triggersCreateCmd() *cobra.Command {
	var source, typ string
	cmd := &cobra.Command{
		Use:               "create APP FN NAME --source /path",
		Short:             "Create a trigger for a fn",
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if typ != "http" && typ != "cron" {
				return fmt.Errorf("bad --type %q: want http or cron", typ)
			}
			if typ == "http" && !strings.HasPrefix(source, "/") {
				return fmt.Errorf("bad --source %q: an http trigger's source is a path starting with /", source)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			app, fn, _, err := cl.resolveFn(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			body := map[string]any{
				"name":   args[2],
				"app_id": app.ID,
				"fn_id":  fn.ID,
				"type":   typ,
				"source": source,
			}
			var tr triggerResource
			raw, err := cl.jsonCall(cmd.Context(), http.MethodPost, "/v2/triggers", nil, body, &tr)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printRaw(raw)
			}
			return printFields(c.stdout, [][2]string{
				{"NAME", tr.Name},
				{"ID", tr.ID},
				{"FN", fn.Name},
				{"TYPE", tr.Type},
				{"SOURCE", tr.Source},
				{"ENDPOINT", c.endpoint(cl, app.Name, tr)},
			})
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "path under /t/APP, e.g. /hello (required)")
	cmd.Flags().StringVar(&typ, "type", "http", "trigger type: http or cron")
	_ = cmd.MarkFlagRequired("source")
	return cmd
}

func (c *cli) triggersListCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "list APP",
		Aliases:           []string{"ls"},
		Short:             "List the triggers of an app",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			trs, raw, err := listInto[triggerResource](cmd.Context(), cl, "/v2/triggers", url.Values{"app_id": {app.ID}})
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printItems(raw)
			}
			names, err := fnNames(cmd.Context(), cl, app.ID)
			if err != nil {
				return err
			}
			rows := make([][]string, 0, len(trs))
			for _, t := range trs {
				fn := names[t.FnID]
				if fn == "" {
					fn = t.FnID
				}
				rows = append(rows, []string{t.Name, t.ID, fn, t.Type, t.Source, c.endpoint(cl, app.Name, t)})
			}
			return printTable(c.stdout, []string{"NAME", "ID", "FN", "TYPE", "SOURCE", "ENDPOINT"}, rows)
		},
	}
}

func (c *cli) triggersDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete APP NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete a trigger",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			// The API filters triggers by app or fn, not name; match here.
			trs, _, err := listInto[triggerResource](cmd.Context(), cl, "/v2/triggers", url.Values{"app_id": {app.ID}})
			if err != nil {
				return err
			}
			var found *triggerResource
			for i := range trs {
				if trs[i].Name == args[1] {
					found = &trs[i]
					break
				}
			}
			if found == nil {
				return fmt.Errorf("trigger %q not found in app %q", args[1], app.Name)
			}
			raw, err := cl.jsonCall(cmd.Context(), http.MethodDelete, "/v2/triggers/"+seg(found.ID), nil, nil, nil)
			if err != nil {
				return err
			}
			return c.deleted("trigger", found.Name, raw)
		},
	}
}

// endpoint is the URL an http trigger answers on, for copy and paste.
func (c *cli) endpoint(cl *client, appName string, t triggerResource) string {
	if t.Type != "http" {
		return "-"
	}
	return cl.url("/t/"+seg(appName)+t.Source, nil)
}

func fnNames(ctx context.Context, cl *client, appID string) (map[string]string, error) {
	fns, _, err := listInto[fnResource](ctx, cl, "/v2/fns", url.Values{"app_id": {appID}})
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(fns))
	for _, f := range fns {
		m[f.ID] = f.Name
	}
	return m, nil
}
