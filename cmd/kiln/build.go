package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-run/kiln/imagebuild"
)

func (c *cli) buildCmd() *cobra.Command {
	var (
		tag, runtime, output string
		envs                 []string
	)
	cmd := &cobra.Command{
		Use:   "build DIR --tag REF",
		Short: "Build a function image from source, without Docker",
		Long: "Build a function image from the source in DIR. With --output the image archive\n" +
			"is written to that file; without it the image is imported into kilnd.\n" +
			"Runtimes: go (a static binary at /function on an empty base).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runtime != "go" {
				return fmt.Errorf("runtime %s not supported yet", runtime)
			}
			for _, e := range envs {
				if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
					return fmt.Errorf("bad --env %q: want KEY=VALUE", e)
				}
			}
			// Without --output the archive only exists to be uploaded, so
			// check kilnd answers before time goes into compiling.
			var cl *client
			if output == "" {
				var err error
				if cl, err = c.client(); err != nil {
					return err
				}
				if _, err := cl.jsonCall(cmd.Context(), http.MethodGet, "/version", nil, nil, nil); err != nil {
					return fmt.Errorf("kilnd at %s: %w (use --output to build without it)", c.apiURL, err)
				}
			}

			path := output
			if path == "" {
				f, err := os.CreateTemp("", "kiln-image-*.tar")
				if err != nil {
					return err
				}
				path = f.Name()
				_ = f.Close()
				defer os.Remove(path)
			}
			dgst, err := writeGoImage(cmd, path, args[0], tag, envs, c)
			if err != nil {
				return err
			}
			if output != "" {
				if c.jsonOutput() {
					return printJSONValue(c.stdout, map[string]string{"name": tag, "digest": dgst, "archive": output})
				}
				fmt.Fprintf(c.stdout, "wrote %s (%s %s)\n", output, tag, dgst)
				return nil
			}
			names, raw, err := c.importArchive(cmd.Context(), cl, path)
			if err != nil {
				return fmt.Errorf("importing %s into kilnd: %w", tag, err)
			}
			return c.showImported(names, raw)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&tag, "tag", "t", "", "image reference to name the image, e.g. hello:dev (required)")
	f.StringVar(&runtime, "runtime", "go", "language runtime of the source: go")
	f.StringVar(&output, "output", "", "write the image archive to this file instead of importing it")
	f.StringArrayVar(&envs, "env", nil, "KEY=VALUE baked into the image's environment (repeatable)")
	_ = cmd.MarkFlagRequired("tag")
	return cmd
}

// writeGoImage builds into path, removing a half-written file on failure so
// --output never leaves a corrupt archive behind.
func writeGoImage(cmd *cobra.Command, path, dir, tag string, envs []string, c *cli) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	dgst, err := imagebuild.GoFunctionImage(cmd.Context(), bw, abs, tag, envs, c.stderr)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	return dgst, nil
}
