package main

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/kiln-run/kiln/imagebuild"
)

// The starter of each runtime (text/template files, named .tmpl so the Go
// one is not a package of this module). images/<runtime>/example is
// `kiln init` of it, checked by TestInitExamplesUpToDate.
//
//go:embed templates
var templates embed.FS

const kilnModule = "github.com/kiln-run/kiln"

// initData fills the templates.
type initData struct {
	Name, App, Runtime, Format string
}

// handlerFile is each runtime's source file in templates/<runtime>/.
var handlerFile = map[string]string{
	imagebuild.RuntimeGo:     "main.go",
	imagebuild.RuntimePython: "func.py",
	imagebuild.RuntimeNode:   "func.js",
	imagebuild.RuntimeShell:  "func.sh",
}

// initFiles renders the starter: the handler, kiln.yaml and README.md,
// by name. go.mod (for go) is decided by the caller, who knows where.
func initFiles(d initData) (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, src := range map[string]string{
		handlerFile[d.Runtime]: "templates/" + d.Runtime + "/" + handlerFile[d.Runtime] + ".tmpl",
		"kiln.yaml":            "templates/kiln.yaml.tmpl",
		"README.md":            "templates/README.md.tmpl",
	} {
		text, err := templates.ReadFile(src)
		if err != nil {
			return nil, err
		}
		t, err := template.New(name).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, d); err != nil {
			return nil, err
		}
		out[name] = buf.Bytes()
	}
	return out, nil
}

func (c *cli) initCmd() *cobra.Command {
	var rt, app, format string
	cmd := &cobra.Command{
		Use:   "init --runtime go|python|node|shell NAME",
		Short: "Create a function in directory NAME, ready for kiln deploy",
		Long: "Create directory NAME with a handler, a kiln.yaml (app NAME, fn NAME, a hot\n" +
			"format, 128 MB, 30 s, an http trigger /NAME) and a README line. It builds and\n" +
			"deploys as it stands:\n\n" +
			"  kiln init --runtime python hello && cd hello && kiln deploy\n" +
			"  kiln invoke hello hello --body World\n\n" +
			"Formats: go, python and node get http-stream (Fn's; json-http, http and json work\n" +
			"too), hot: one container serves call after call. The shell runtime speaks only\n" +
			"default, a container per call.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			name := sanitizeName(filepath.Base(dir))
			if name == "" || !nameOK.MatchString(name) {
				return fmt.Errorf("bad name %q: use letters, digits, '_', '-' and '.'", filepath.Base(dir))
			}
			if !slices.Contains(imagebuild.Runtimes(), rt) {
				return fmt.Errorf("--runtime is required: one of %s", strings.Join(imagebuild.Runtimes(), ", "))
			}
			if app == "" {
				app = name
			}
			switch {
			case format == "" && rt == imagebuild.RuntimeShell:
				format = "default"
			case format == "":
				format = "http-stream"
			case rt == imagebuild.RuntimeShell && format != "default":
				return fmt.Errorf("the shell runtime speaks only the default format (a container per call), not %s", format)
			case !slices.Contains(formats, format):
				return fmt.Errorf("bad --format %q: want one of %s", format, strings.Join(formats, ", "))
			}
			if _, err := os.Stat(dir); err == nil {
				return fmt.Errorf("%s exists already: kiln init makes a new directory", dir)
			}
			files, err := initFiles(initData{Name: name, App: app, Runtime: rt, Format: format})
			if err != nil {
				return err
			}
			var notes []string
			if rt == imagebuild.RuntimeGo {
				gomod, note, err := goModFor(dir, name, c.getenv)
				if err != nil {
					return err
				}
				if gomod != nil {
					files["go.mod"] = gomod
				}
				if note != "" {
					notes = append(notes, note)
				}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			for _, n := range sortedKeys(files) {
				mode := fs.FileMode(0o644)
				if strings.HasSuffix(n, ".sh") {
					mode = 0o755
				}
				if err := os.WriteFile(filepath.Join(dir, n), files[n], mode); err != nil {
					return err
				}
			}
			if c.structured() {
				return c.printValue(map[string]any{"dir": dir, "app": app, "fn": name, "runtime": rt, "format": format, "files": sortedKeys(files)})
			}
			fmt.Fprintf(c.stdout, "created %s/ (%s): %s\n", dir, rt, strings.Join(sortedKeys(files), ", "))
			if rt == imagebuild.RuntimeShell {
				fmt.Fprintln(c.stdout, "format default: the shell runtime starts a container per call (go, python and node stay hot)")
			} else {
				fmt.Fprintf(c.stdout, "format %s: hot, one container serves call after call\n", format)
			}
			for _, n := range notes {
				fmt.Fprintln(c.stdout, n)
			}
			fmt.Fprintf(c.stdout, "next: cd %s && kiln deploy && kiln invoke %s %s --body World\n", dir, app, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&rt, "runtime", "", "runtime: "+strings.Join(imagebuild.Runtimes(), ", ")+" (required)")
	cmd.Flags().StringVar(&app, "app", "", "app of the fn (default: NAME)")
	cmd.Flags().StringVar(&format, "format", "", "format (default: http-stream; default for shell)")
	_ = cmd.RegisterFlagCompletionFunc("runtime", cobra.FixedCompletions(imagebuild.Runtimes(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// goModFor decides the go.mod of a Go starter in dir. Inside kiln's own
// module it needs none. Elsewhere it requires kiln's module for the FDK:
// replaced by a kiln source tree when one is known (KILN_SOURCE, or the
// checkout this kiln binary was built in), so it builds offline; else at
// this kiln's version, to be fetched with go mod tidy.
func goModFor(dir, name string, getenv func(string) string) ([]byte, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	if root := kilnModuleAbove(filepath.Dir(abs)); root != "" {
		return nil, "no go.mod: the function is part of the kiln module at " + root, nil
	}
	src := getenv("KILN_SOURCE")
	if src == "" {
		if exe, err := os.Executable(); err == nil {
			if exe, err = filepath.EvalSymlinks(exe); err == nil {
				src = kilnModuleAbove(filepath.Dir(exe))
			}
		}
	}
	goVersion := "1.22"
	if src != "" {
		if v := goDirective(filepath.Join(src, "go.mod")); v != "" {
			goVersion = v
		}
		mod := fmt.Sprintf("module %s\n\ngo %s\n\nrequire %s v0.0.0-00010101000000-000000000000\n\n// The FDK comes from this kiln source tree; point it elsewhere, or drop\n// the replace and require a published version.\nreplace %s => %s\n",
			name, goVersion, kilnModule, kilnModule, src)
		return []byte(mod), "go.mod: the FDK comes from the kiln source at " + src, nil
	}
	version := "latest"
	if bi, ok := debug.ReadBuildInfo(); ok && strings.HasPrefix(bi.Main.Version, "v") {
		version = bi.Main.Version
	}
	mod := fmt.Sprintf("module %s\n\ngo %s\n", name, goVersion)
	return []byte(mod), fmt.Sprintf("go.mod: run `go get %s/images/go/fdk@%s` in %s before deploying (or set KILN_SOURCE to a kiln checkout and init again)", kilnModule, version, dir), nil
}

// kilnModuleAbove is the nearest directory at or above dir whose go.mod
// is kiln's module.
func kilnModuleAbove(dir string) string {
	for {
		if goModule(filepath.Join(dir, "go.mod")) == kilnModule {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func goModule(path string) string { return goModLine(path, "module ") }

func goDirective(path string) string { return goModLine(path, "go ") }

func goModLine(path, prefix string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), prefix); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
