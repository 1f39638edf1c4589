package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func (c *cli) fnsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "fns",
		Aliases: []string{"fn", "functions"},
		Short:   "Manage fns (functions) of an app",
	}
	cmd.AddCommand(c.fnsCreateCmd(), c.fnsListCmd(), c.fnsGetCmd(), c.fnsUpdateCmd(), c.fnsDeleteCmd())
	return cmd
}

// fnFlags are the settable fields of a fn. Only flags the user gave are
// sent, so kilnd's defaults apply on create and other fields stay on update.
type fnFlags struct {
	image       string
	format      string
	memory      int64
	cpus        string
	timeout     int
	idleTimeout int
	config      []string
	annotations []string
	secrets     []string
	scaling     [4]int // max_concurrency, max_instances, min_warm, max_requests
}

// scalingKnobs are the fn fields of fnFlags.scaling, flag and JSON names.
var scalingKnobs = [4][2]string{
	{"max-concurrency", "max_concurrency"},
	{"max-instances", "max_instances"},
	{"min-warm", "min_warm"},
	{"max-requests", "max_requests"},
}

// formats kilnd speaks; hotFormats keep a container for call after call.
var formats = []string{"default", "http", "json", "json-http", "cloudevent", "http-stream"}

func (f *fnFlags) register(fs *pflag.FlagSet, withImage bool) {
	if withImage {
		fs.StringVar(&f.image, "image", "", "image reference")
	}
	fs.StringVar(&f.format, "format", "", "format: default, http, json, json-http, cloudevent (stdin/stdout) or http-stream (Fn's socket contract)")
	fs.Int64Var(&f.memory, "memory", 0, "memory limit in MB (kilnd default 128)")
	fs.StringVar(&f.cpus, "cpus", "", "CPU quota in milli-CPUs: 500 or 500m; a decimal such as 0.5 means CPUs")
	fs.IntVar(&f.timeout, "timeout", 0, "call timeout in seconds (kilnd default 30)")
	fs.IntVar(&f.idleTimeout, "idle-timeout", 0, "seconds a hot container may stay idle (kilnd default 30)")
	fs.StringArrayVar(&f.config, "config", nil, "config KEY=VALUE, passed to the fn as env; KEY= removes on update (repeatable)")
	fs.StringArrayVar(&f.annotations, "annotation", nil, annotationHelp)
	fs.StringArrayVar(&f.secrets, "secret", nil, "name of an app secret the fn gets at /run/secrets/NAME (repeatable; on update the list replaces the fn's; --secret '' clears it)")
	help := [4]string{
		"calls one container serves at once (0: kilnd's default)",
		"containers the fn may run at once (0: no limit)",
		"containers kept warm even when idle (0: none)",
		"calls a container serves before it is replaced (0: no limit)",
	}
	for i, k := range scalingKnobs {
		fs.IntVar(&f.scaling[i], k[0], 0, help[i])
	}
}

func (f *fnFlags) body(fs *pflag.FlagSet) (map[string]any, error) {
	b := map[string]any{}
	if fs.Changed("image") {
		if f.image == "" {
			return nil, fmt.Errorf("--image must not be empty")
		}
		b["image"] = f.image
	}
	if fs.Changed("format") {
		if !slices.Contains(formats, f.format) {
			return nil, fmt.Errorf("bad --format %q: want one of %s", f.format, strings.Join(formats, ", "))
		}
		b["format"] = f.format
	}
	if fs.Changed("memory") {
		if f.memory <= 0 {
			return nil, fmt.Errorf("--memory must be positive")
		}
		b["memory"] = f.memory
	}
	if fs.Changed("cpus") {
		m, err := parseMilliCPU(f.cpus)
		if err != nil {
			return nil, err
		}
		b["cpus"] = m
	}
	if fs.Changed("timeout") {
		if f.timeout <= 0 {
			return nil, fmt.Errorf("--timeout must be positive")
		}
		b["timeout"] = f.timeout
	}
	if fs.Changed("idle-timeout") {
		if f.idleTimeout <= 0 {
			return nil, fmt.Errorf("--idle-timeout must be positive")
		}
		b["idle_timeout"] = f.idleTimeout
	}
	cfg, err := parseKVs(f.config)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		b["config"] = cfg
	}
	ann, err := parseAnnotations(f.annotations)
	if err != nil {
		return nil, err
	}
	if ann != nil {
		b["annotations"] = ann
	}
	if fs.Changed("secret") {
		names := []string{}
		for _, s := range f.secrets {
			if s != "" {
				names = append(names, s)
			}
		}
		b["secrets"] = names
	}
	for i, k := range scalingKnobs {
		if fs.Changed(k[0]) {
			if f.scaling[i] < 0 {
				return nil, fmt.Errorf("--%s must not be negative", k[0])
			}
			b[k[1]] = f.scaling[i]
		}
	}
	return b, nil
}

// parseMilliCPU accepts the spellings people bring from Kubernetes (500m)
// and Docker (0.5) as well as kilnd's own unit (500).
func parseMilliCPU(s string) (int64, error) {
	bad := fmt.Errorf("bad --cpus %q: want milli-CPUs (500, 500m) or CPUs (0.5)", s)
	s = strings.TrimSpace(s)
	switch {
	case strings.HasSuffix(s, "m"):
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "m"), 10, 64)
		if err != nil || n < 0 {
			return 0, bad
		}
		return n, nil
	case strings.Contains(s, "."):
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 || f > 1e6 {
			return 0, bad
		}
		return int64(math.Round(f * 1000)), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, bad
	}
	return n, nil
}

func (c *cli) fnsCreateCmd() *cobra.Command {
	var f fnFlags
	cmd := &cobra.Command{
		Use:   "create APP NAME IMAGE",
		Short: "Create a fn in an app",
		Long: "Create a fn in an app. Without --format the fn gets json-http, a hot format:\n" +
			"one container serves call after call (kiln's FDKs speak it). --format default\n" +
			"starts a container per call; use it for images that read one request and exit.",
		Args:              cobra.ExactArgs(3),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := f.body(cmd.Flags())
			if err != nil {
				return err
			}
			switch {
			case !cmd.Flags().Changed("format"):
				// kilnd's own default is "default", a container per call:
				// a first fn should not be slow by surprise.
				body["format"] = "json-http"
				fmt.Fprintln(c.stderr, "kiln: no --format given: using json-http, a hot format (one container serves many calls); --format default starts a container per call")
			case f.format == "default":
				fmt.Fprintln(c.stderr, "kiln: format default starts a container per call; a hot format (json-http, http-stream) keeps one warm")
			}
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			body["app_id"] = app.ID
			body["name"] = args[1]
			body["image"] = args[2]
			var fn fnResource
			raw, err := cl.jsonCall(cmd.Context(), http.MethodPost, "/v2/fns", nil, body, &fn)
			if err != nil {
				return err
			}
			return c.showFn(app, fn, raw)
		},
	}
	f.register(cmd.Flags(), false)
	return cmd
}

func (c *cli) fnsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "list APP",
		Aliases:           []string{"ls"},
		Short:             "List the fns of an app",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeAppFn(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, app, err := c.clientForApp(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fns, raw, err := listInto[fnResource](cmd.Context(), cl, "/v2/fns", url.Values{"app_id": {app.ID}})
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printItems(raw)
			}
			rows := make([][]string, 0, len(fns))
			for _, f := range fns {
				rows = append(rows, []string{f.Name, f.ID, f.Image, orDash(f.Format),
					strconv.FormatInt(f.Memory, 10), fmtCPUs(f.CPUs), strconv.Itoa(f.Timeout), strconv.Itoa(f.IdleTimeout)})
			}
			return printTable(c.stdout, []string{"NAME", "ID", "IMAGE", "FORMAT", "MEMORY", "CPUS", "TIMEOUT", "IDLE"}, rows)
		},
	}
}

func (c *cli) fnsGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "get APP FN",
		Aliases:           []string{"inspect"},
		Short:             "Show a fn",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			app, fn, raw, err := cl.resolveFn(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return c.showFn(app, fn, raw)
		},
	}
}

func (c *cli) fnsUpdateCmd() *cobra.Command {
	var f fnFlags
	cmd := &cobra.Command{
		Use:               "update APP FN",
		Short:             "Change a fn (only the given flags change)",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeAppFn(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := f.body(cmd.Flags())
			if err != nil {
				return err
			}
			if len(body) == 0 {
				return fmt.Errorf("nothing to update: give at least one flag (see --help)")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			app, fn, _, err := cl.resolveFn(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			var updated fnResource
			raw, err := cl.jsonCall(cmd.Context(), http.MethodPut, "/v2/fns/"+seg(fn.ID), nil, body, &updated)
			if err != nil {
				return err
			}
			return c.showFn(app, updated, raw)
		},
	}
	f.register(cmd.Flags(), true)
	return cmd
}

func (c *cli) fnsDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete APP FN",
		Aliases:           []string{"rm"},
		Short:             "Delete a fn",
		Args:              cobra.ExactArgs(2),
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
			raw, err := cl.jsonCall(cmd.Context(), http.MethodDelete, "/v2/fns/"+seg(fn.ID), nil, nil, nil)
			if err != nil {
				return err
			}
			return c.deleted("fn", fn.Name, raw)
		},
	}
}

func (c *cli) showFn(app appResource, f fnResource, raw json.RawMessage) error {
	if c.structured() {
		return c.printRaw(raw)
	}
	return printFields(c.stdout, [][2]string{
		{"NAME", f.Name},
		{"ID", f.ID},
		{"APP", app.Name + " (" + f.AppID + ")"},
		{"IMAGE", f.Image},
		{"FORMAT", orDash(f.Format)},
		{"MEMORY", fmt.Sprintf("%d MB", f.Memory)},
		{"CPUS", fmtCPUs(f.CPUs)},
		{"TIMEOUT", fmt.Sprintf("%ds", f.Timeout)},
		{"IDLE TIMEOUT", fmt.Sprintf("%ds", f.IdleTimeout)},
		{"CONFIG", fmtConfig(f.Config)},
		{"ANNOTATIONS", fmtAnnotations(f.Annotations)},
		{"SECRETS", orDash(strings.Join(f.Secrets, ", "))},
		{"SCALING", fmtScaling(f)},
		{"CREATED", fmtTime(f.CreatedAt)},
		{"UPDATED", fmtTime(f.UpdatedAt)},
	})
}

func fmtScaling(f fnResource) string {
	var parts []string
	for i, v := range []int{f.MaxConcurrency, f.MaxInstances, f.MinWarm, f.MaxRequests} {
		if v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", scalingKnobs[i][1], v))
		}
	}
	return orDash(strings.Join(parts, ", "))
}

func fmtCPUs(milli int64) string {
	if milli <= 0 {
		return "-"
	}
	return strconv.FormatInt(milli, 10) + "m"
}
