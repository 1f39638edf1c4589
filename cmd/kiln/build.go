package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kiln-run/kiln/imagebuild"
)

func (c *cli) buildCmd() *cobra.Command {
	var (
		tag, runtime, output string
		cacheDir, mirror     string
		platform, base       string
		envs                 []string
	)
	cmd := &cobra.Command{
		Use:   "build DIR --tag REF",
		Short: "Build a function image from source, without Docker",
		Long: "Build a function image from the source in DIR. With --archive the image archive\n" +
			"is written to that file; without it the image is imported into kilnd.\n\n" +
			"Runtimes (detected from DIR's files unless --runtime says):\n" +
			"  go      go.mod or *.go: a static binary at /function on an empty base\n" +
			"  python  *.py: func.py's handler(ctx, data), Debian's python3, the FDK at /fdk\n" +
			"  node    package.json or *.js: func.js's exported handler, Debian's nodejs\n" +
			"  shell   *.sh: func.sh (or run.sh) under busybox, default format only\n\n" +
			"The python and node base (--base): debian is built once with debootstrap (as\n" +
			"root, from the Debian mirror in this machine's apt sources, or --debian-mirror);\n" +
			"host is collected in seconds, without root, from this machine's own python3 or\n" +
			"node, its libraries and standard library; auto (the default) takes debian when it\n" +
			"is cached or can be built and host otherwise. Both are cached in --cache-dir;\n" +
			"later builds only add the function. The shell runtime copies the static busybox\n" +
			"of Debian's busybox-static package from this machine.\n\n" +
			"--platform: Go cross-compiles to any linux platform; python, node and shell images\n" +
			"are made of this machine's binaries and build for its platform only.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runtime != "" && !slices.Contains(imagebuild.Runtimes(), runtime) {
				return fmt.Errorf("unknown runtime %q: want one of %s", runtime, strings.Join(imagebuild.Runtimes(), ", "))
			}
			if c.archiveCompat != "" && output == "" {
				output = c.archiveCompat
			}
			plat, err := imagebuild.ParsePlatform(platform)
			if err != nil {
				return err
			}
			for _, e := range envs {
				if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
					return fmt.Errorf("bad --env %q: want KEY=VALUE", e)
				}
			}
			// Without --archive the archive only exists to be uploaded, so
			// check kilnd answers before time goes into building.
			var cl *client
			if output == "" {
				var err error
				if cl, err = c.client(); err != nil {
					return err
				}
				if _, err := cl.jsonCall(cmd.Context(), http.MethodGet, "/version", nil, nil, nil); err != nil {
					return fmt.Errorf("%w\n(kiln build --archive FILE builds without kilnd)", err)
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
			opts := imagebuild.BuildOptions{
				Dir:      args[0],
				Ref:      tag,
				Runtime:  runtime,
				Env:      envs,
				Progress: c.stderr,
				Platform: plat,
				Base:     imagebuild.BaseOptions{CacheDir: cacheDir, Mirror: mirror, Source: base},
			}
			dgst, err := writeImage(cmd, path, opts)
			if err != nil {
				return err
			}
			if output != "" {
				if c.structured() {
					return c.printValue(map[string]string{"name": tag, "digest": dgst, "archive": output})
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
	f.StringVar(&runtime, "runtime", "", "runtime of the source: "+strings.Join(imagebuild.Runtimes(), ", ")+" (default: detected)")
	f.StringVar(&output, "archive", "", "write the image archive to this file instead of importing it (formerly --output)")
	f.StringVar(&platform, "platform", "", "platform to build for, e.g. linux/arm64 (default: this machine's, "+imagebuild.HostPlatform().String()+")")
	f.StringVar(&base, "base", imagebuild.BaseAuto, "python/node base: "+strings.Join(imagebuild.BaseSources(), ", "))
	_ = cmd.RegisterFlagCompletionFunc("runtime", cobra.FixedCompletions(imagebuild.Runtimes(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("base", cobra.FixedCompletions(imagebuild.BaseSources(), cobra.ShellCompDirectiveNoFileComp))
	f.StringArrayVar(&envs, "env", nil, "KEY=VALUE baked into the image's environment (repeatable)")
	f.StringVar(&cacheDir, "cache-dir", imagebuild.CacheDirFrom(c.getenv),
		"where built python/node bases are kept (env KILN_CACHE_DIR; else build-cache in KILN_DATA_DIR, else the user cache dir)")
	f.StringVar(&mirror, "debian-mirror", c.getenv("KILN_DEBIAN_MIRROR"),
		"Debian archive URL for building bases (env KILN_DEBIAN_MIRROR; default: from this machine's apt sources)")
	_ = cmd.MarkFlagRequired("tag")
	return cmd
}

// writeImage builds into path, removing a half-written file on failure so
// --archive never leaves a corrupt archive behind.
func writeImage(cmd *cobra.Command, path string, opts imagebuild.BuildOptions) (string, error) {
	abs, err := filepath.Abs(opts.Dir)
	if err != nil {
		return "", err
	}
	opts.Dir = abs
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	dgst, _, err := imagebuild.Build(cmd.Context(), bw, opts)
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
