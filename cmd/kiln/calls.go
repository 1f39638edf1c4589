package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
)

func (c *cli) callsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "calls",
		Aliases: []string{"call"},
		Short:   "Inspect the calls of a fn and their logs",
	}
	cmd.AddCommand(c.callsListCmd(), c.callsGetCmd(), c.callsLogCmd())
	return cmd
}

func (c *cli) callsListCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:               "list APP FN",
		Aliases:           []string{"ls"},
		Short:             "List the recent calls of a fn, newest first",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit must not be negative")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			_, fn, _, err := cl.resolveFn(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			calls, raw, err := listLimit[callResource](cmd.Context(), cl, "/v2/fns/"+seg(fn.ID)+"/calls", nil, limit)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printItems(raw)
			}
			rows := make([][]string, 0, len(calls))
			for _, k := range calls {
				rows = append(rows, []string{k.ID, k.Status, fmtTime(k.CreatedAt), fmtTime(k.StartedAt), fmtTime(k.CompletedAt)})
			}
			return printTable(c.stdout, []string{"ID", "STATUS", "CREATED", "STARTED", "COMPLETED"}, rows)
		},
	}
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "show at most this many calls (0: all kilnd keeps)")
	return cmd
}

func (c *cli) callsGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "get APP FN CALL_ID",
		Aliases:           []string{"inspect"},
		Short:             "Show a call",
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			_, fn, _, err := cl.resolveFn(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			var k callResource
			raw, err := cl.jsonCall(cmd.Context(), http.MethodGet, "/v2/fns/"+seg(fn.ID)+"/calls/"+seg(args[2]), nil, nil, &k)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printRaw(raw)
			}
			fields := [][2]string{
				{"ID", k.ID},
				{"FN", fn.Name + " (" + fn.ID + ")"},
				{"STATUS", k.Status},
				{"CREATED", fmtTime(k.CreatedAt)},
				{"STARTED", fmtTime(k.StartedAt)},
				{"COMPLETED", fmtTime(k.CompletedAt)},
			}
			if k.Error != "" {
				fields = append(fields, [2]string{"ERROR", k.Error})
			}
			return printFields(c.stdout, fields)
		},
	}
}

func (c *cli) callsLogCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "log APP FN CALL_ID",
		Aliases:           []string{"logs"},
		Short:             "Print what a call wrote to stderr",
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			_, fn, _, err := cl.resolveFn(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			raw, err := cl.do(cmd.Context(), request{
				Method: http.MethodGet,
				Path:   "/v2/fns/" + seg(fn.ID) + "/calls/" + seg(args[2]) + "/log",
			})
			if err != nil {
				return err
			}
			_, err = c.stdout.Write(raw)
			return err
		},
	}
}
