package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

func (c *cli) appsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "apps",
		Aliases: []string{"app"},
		Short:   "Manage apps",
	}
	cmd.AddCommand(c.appsCreateCmd(), c.appsListCmd(), c.appsGetCmd(), c.appsUpdateCmd(), c.appsDeleteCmd())
	return cmd
}

func (c *cli) appsCreateCmd() *cobra.Command {
	var config, annotations []string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an app",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := parseKVs(config)
			if err != nil {
				return err
			}
			ann, err := parseAnnotations(annotations)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0]}
			if cfg != nil {
				body["config"] = cfg
			}
			if ann != nil {
				body["annotations"] = ann
			}
			var app appResource
			raw, err := cl.jsonCall(cmd.Context(), http.MethodPost, "/v2/apps", nil, body, &app)
			if err != nil {
				return err
			}
			return c.showApp(app, raw)
		},
	}
	cmd.Flags().StringArrayVar(&config, "config", nil, "config KEY=VALUE, passed to every fn as env (repeatable)")
	cmd.Flags().StringArrayVar(&annotations, "annotation", nil, annotationHelp)
	return cmd
}

const annotationHelp = "annotation KEY=VALUE; a JSON object, array or quoted string VALUE is sent as JSON; KEY= removes on update (repeatable)"

func (c *cli) appsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List apps",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			apps, raw, err := listInto[appResource](cmd.Context(), cl, "/v2/apps", nil)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printItems(raw)
			}
			rows := make([][]string, 0, len(apps))
			for _, a := range apps {
				rows = append(rows, []string{a.Name, a.ID, fmtConfig(a.Config), fmtTime(a.CreatedAt)})
			}
			return printTable(c.stdout, []string{"NAME", "ID", "CONFIG", "CREATED"}, rows)
		},
	}
}

func (c *cli) appsGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "get APP",
		Aliases:           []string{"inspect"},
		Short:             "Show an app",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			app, raw, err := cl.appByName(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.showApp(app, raw)
		},
	}
}

func (c *cli) appsUpdateCmd() *cobra.Command {
	var config, annotations []string
	cmd := &cobra.Command{
		Use:               "update APP",
		Short:             "Change an app's config or annotations (KEY= removes KEY)",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := parseKVs(config)
			if err != nil {
				return err
			}
			ann, err := parseAnnotations(annotations)
			if err != nil {
				return err
			}
			if cfg == nil && ann == nil {
				return fmt.Errorf("nothing to update: give --config KEY=VALUE or --annotation KEY=VALUE")
			}
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			// Only the changed keys are sent: kilnd merges config as Fn does.
			body := map[string]any{}
			if cfg != nil {
				body["config"] = cfg
			}
			if ann != nil {
				body["annotations"] = ann
			}
			var updated appResource
			raw, err := cl.jsonCall(cmd.Context(), http.MethodPut, "/v2/apps/"+seg(app.ID), nil, body, &updated)
			if err != nil {
				return err
			}
			return c.showApp(updated, raw)
		},
	}
	cmd.Flags().StringArrayVar(&config, "config", nil, "config KEY=VALUE to set, KEY= to remove (repeatable)")
	cmd.Flags().StringArrayVar(&annotations, "annotation", nil, annotationHelp)
	return cmd
}

func (c *cli) appsDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete APP",
		Aliases:           []string{"rm"},
		Short:             "Delete an app",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			raw, err := cl.jsonCall(cmd.Context(), http.MethodDelete, "/v2/apps/"+seg(app.ID), nil, nil, nil)
			if err != nil {
				return err
			}
			return c.deleted("app", app.Name, raw)
		},
	}
}

func (c *cli) showApp(a appResource, raw json.RawMessage) error {
	if c.structured() {
		return c.printRaw(raw)
	}
	return printFields(c.stdout, [][2]string{
		{"NAME", a.Name},
		{"ID", a.ID},
		{"CONFIG", fmtConfig(a.Config)},
		{"ANNOTATIONS", fmtAnnotations(a.Annotations)},
		{"CREATED", fmtTime(a.CreatedAt)},
		{"UPDATED", fmtTime(a.UpdatedAt)},
	})
}

// deleted reports a deletion: a line for people, the server's answer (if
// any) for -o json.
func (c *cli) deleted(kind, name string, raw []byte) error {
	if c.structured() {
		if len(bytes.TrimSpace(raw)) == 0 {
			return nil
		}
		return c.printRaw(raw)
	}
	_, err := fmt.Fprintf(c.stdout, "%s %s deleted\n", kind, name)
	return err
}
