package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kiln-run/kiln/imagebuild"
)

// manifest is what kiln deploy deploys, read from a kiln.yaml or an Fn
// func.yaml: one app, its fns and their triggers. Zero values mean "not
// given": deploy leaves those fields as kilnd has them.
type manifest struct {
	Path string // the file, as given
	Dir  string // its directory, absolute; build dirs are relative to it
	Kind string // "kiln.yaml" or "func.yaml"
	App  appSpec
	Fns  []fnSpec
	// Notes tell the user what was assumed or ignored (an Fn project's app
	// name, func.yaml fields kiln does not use).
	Notes []string
}

type appSpec struct {
	Name        string
	Config      map[string]string
	Annotations map[string]any
	line        int
}

type fnSpec struct {
	Name string
	// Runtime, when set, builds the image from Build (a directory).
	Runtime string
	Build   string
	// Archive, when set, is an image archive to import.
	Archive string
	// Image names the image: the tag of a build (may hold {digest}), the
	// image in an archive, or an image kilnd has or can pull.
	Image       string
	Format      string
	Memory      int64
	CPUs        *int64 // milli-CPUs
	Timeout     int
	IdleTimeout int
	Config      map[string]string
	Annotations map[string]any
	Secrets     []string
	SecretsSet  bool // secrets: was given, even empty (clears the list)
	Scaling     [4]int
	Triggers    []triggerSpec
	line        int
}

type triggerSpec struct {
	Name        string
	Type        string
	Source      string
	Annotations map[string]any
	line        int
}

// kiln.yaml as written. Field names are the API's.
type kilnYAML struct {
	App         string            `yaml:"app"`
	Config      map[string]string `yaml:"config"`
	Annotations map[string]any    `yaml:"annotations"`
	Fns         []kilnFnYAML      `yaml:"fns"`
}

type kilnFnYAML struct {
	Name           string            `yaml:"name"`
	Runtime        string            `yaml:"runtime"`
	Build          string            `yaml:"build"`
	Archive        string            `yaml:"archive"`
	Image          string            `yaml:"image"`
	Format         string            `yaml:"format"`
	Memory         int64             `yaml:"memory"`
	CPUs           *cpuValue         `yaml:"cpus"`
	Timeout        int               `yaml:"timeout"`
	IdleTimeout    int               `yaml:"idle_timeout"`
	Config         map[string]string `yaml:"config"`
	Annotations    map[string]any    `yaml:"annotations"`
	Secrets        *[]string         `yaml:"secrets"`
	MaxConcurrency int               `yaml:"max_concurrency"`
	MaxInstances   int               `yaml:"max_instances"`
	MinWarm        int               `yaml:"min_warm"`
	MaxRequests    int               `yaml:"max_requests"`
	Triggers       []triggerYAML     `yaml:"triggers"`
}

type triggerYAML struct {
	Name        string         `yaml:"name"`
	Type        string         `yaml:"type"`
	Source      string         `yaml:"source"`
	Annotations map[string]any `yaml:"annotations"`
}

// cpuValue takes the spellings --cpus takes: 500 (milli), "500m", 0.5.
type cpuValue int64

func (v *cpuValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: cpus: want milli-CPUs (500, 500m) or CPUs (0.5)", n.Line)
	}
	m, err := parseMilliCPU(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: cpus %q: want milli-CPUs (500, 500m) or CPUs (0.5)", n.Line, n.Value)
	}
	*v = cpuValue(m)
	return nil
}

// funcYAML is the part of Fn's func.yaml kiln uses.
type funcYAML struct {
	Name        string            `yaml:"name"`
	Runtime     string            `yaml:"runtime"`
	Image       string            `yaml:"image"`
	Format      string            `yaml:"format"`
	Memory      int64             `yaml:"memory"`
	Timeout     int               `yaml:"timeout"`
	IdleTimeout int               `yaml:"idle_timeout"`
	Config      map[string]string `yaml:"config"`
	Annotations map[string]any    `yaml:"annotations"`
	Triggers    []triggerYAML     `yaml:"triggers"`
}

// func.yaml fields kiln reads (above) and those it knowingly ignores.
var (
	funcYAMLUsed    = []string{"name", "runtime", "image", "format", "memory", "timeout", "idle_timeout", "config", "annotations", "triggers"}
	funcYAMLIgnored = []string{"schema_version", "version", "build_image", "run_image", "entrypoint", "cmd",
		"content_type", "type", "build", "expects", "path", "headers", "inputs"}
)

var errEOF = io.EOF

// findManifest picks the file kiln deploy reads: the one given, else the
// first of kiln.yaml, kiln.yml, func.yaml, func.yml in dir.
func findManifest(dir, given string) (string, error) {
	if given != "" {
		return given, nil
	}
	for _, n := range []string{"kiln.yaml", "kiln.yml", "func.yaml", "func.yml"} {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err == nil {
			if dir == "." {
				return n, nil
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("no kiln.yaml or func.yaml in %s: kiln init --runtime python NAME makes one, or -f FILE", dir)
}

// loadManifest reads and checks a kiln.yaml or func.yaml. appFlag names
// the app of an Fn project (which has none), or overrides the file's.
func loadManifest(path, appFlag string) (*manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	m := &manifest{Path: path, Dir: filepath.Dir(abs)}
	base := strings.ToLower(filepath.Base(path))
	if strings.HasPrefix(base, "func.") {
		m.Kind = "func.yaml"
		err = m.parseFunc(data, appFlag)
	} else {
		m.Kind = "kiln.yaml"
		err = m.parseKiln(data, appFlag)
	}
	if err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// errAt is an error pointing at a line of the file, as compilers print them.
func (m *manifest) errAt(line int, format string, args ...any) error {
	if line > 0 {
		return fmt.Errorf("%s:%d: %s", m.Path, line, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("%s: %s", m.Path, fmt.Sprintf(format, args...))
}

func (m *manifest) parseKiln(data []byte, appFlag string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s", prefixYAMLErr(m.Path, err))
	}
	root := docRoot(&doc)
	if root == nil {
		return m.errAt(0, "empty file: want app: and fns:")
	}
	if root.Kind != yaml.MappingNode {
		return m.errAt(root.Line, "want a mapping with app: and fns:")
	}
	var f kilnYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	// A misspelt field would otherwise be dropped without a word, and the
	// deploy would "succeed" without it.
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s", prefixYAMLErr(m.Path, err))
	}
	m.App = appSpec{Name: f.App, Config: f.Config, Annotations: f.Annotations, line: keyLine(root, "app")}
	if appFlag != "" && appFlag != f.App {
		if f.App != "" {
			m.Notes = append(m.Notes, fmt.Sprintf("app %s (from --app; the file says %s)", appFlag, f.App))
		}
		m.App.Name = appFlag
	}
	if m.App.line == 0 {
		m.App.line = root.Line
	}
	fnsNode := mapValue(root, "fns")
	for i, ff := range f.Fns {
		line := 0
		var fnNode *yaml.Node
		if fnsNode != nil && i < len(fnsNode.Content) {
			fnNode = fnsNode.Content[i]
			line = fnNode.Line
		}
		fn := fnSpec{
			Name: ff.Name, Runtime: ff.Runtime, Build: ff.Build, Archive: ff.Archive, Image: ff.Image,
			Format: ff.Format, Memory: ff.Memory, Timeout: ff.Timeout, IdleTimeout: ff.IdleTimeout,
			Config: ff.Config, Annotations: ff.Annotations,
			Scaling: [4]int{ff.MaxConcurrency, ff.MaxInstances, ff.MinWarm, ff.MaxRequests},
			line:    line,
		}
		if ff.CPUs != nil {
			v := int64(*ff.CPUs)
			fn.CPUs = &v
		}
		if ff.Secrets != nil {
			fn.Secrets, fn.SecretsSet = *ff.Secrets, true
		}
		var trNodes *yaml.Node
		if fnNode != nil {
			trNodes = mapValue(fnNode, "triggers")
		}
		for j, t := range ff.Triggers {
			tl := line
			if trNodes != nil && j < len(trNodes.Content) {
				tl = trNodes.Content[j].Line
			}
			fn.Triggers = append(fn.Triggers, triggerSpec{Name: t.Name, Type: t.Type, Source: t.Source, Annotations: t.Annotations, line: tl})
		}
		m.Fns = append(m.Fns, fn)
	}
	return nil
}

// fnRuntime maps Fn's runtime names (python3.11, go1.x, node18, docker) to
// kiln's build runtimes; "" means the image is built elsewhere.
func fnRuntime(rt string) (string, bool) {
	r := strings.ToLower(strings.TrimSpace(rt))
	switch {
	case r == "":
		return "", true
	case r == "docker":
		return "", true
	case strings.HasPrefix(r, "python"):
		return imagebuild.RuntimePython, true
	case strings.HasPrefix(r, "node"):
		return imagebuild.RuntimeNode, true
	case r == "go" || strings.HasPrefix(r, "go1"):
		return imagebuild.RuntimeGo, true
	}
	return "", false
}

func (m *manifest) parseFunc(data []byte, appFlag string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s", prefixYAMLErr(m.Path, err))
	}
	root := docRoot(&doc)
	if root == nil || root.Kind != yaml.MappingNode {
		return m.errAt(0, "want an Fn func.yaml mapping with name: and runtime: or image:")
	}
	var f funcYAML
	if err := root.Decode(&f); err != nil {
		return fmt.Errorf("%s", prefixYAMLErr(m.Path, err))
	}
	var ignored, unknown []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i].Value
		switch {
		case slices.Contains(funcYAMLUsed, k):
		case slices.Contains(funcYAMLIgnored, k):
			ignored = append(ignored, k)
		default:
			unknown = append(unknown, fmt.Sprintf("%s (line %d)", k, root.Content[i].Line))
		}
	}
	if len(ignored) > 0 {
		m.Notes = append(m.Notes, "func.yaml: ignoring "+strings.Join(ignored, ", ")+" (kiln builds with its own FDK bases)")
	}
	if len(unknown) > 0 {
		m.Notes = append(m.Notes, "func.yaml: unknown field(s) "+strings.Join(unknown, ", ")+" ignored")
	}

	// An Fn project names no app: Fn kept it in ../app.yaml, or took it
	// from the command line. Say which was taken.
	switch {
	case appFlag != "":
		m.App.Name = appFlag
		m.Notes = append(m.Notes, fmt.Sprintf("app %s (from --app)", appFlag))
	default:
		parent := filepath.Dir(m.Dir)
		if name := fnAppYAML(filepath.Join(parent, "app.yaml")); name != "" {
			m.App.Name = name
			m.Notes = append(m.Notes, fmt.Sprintf("app %s (from %s; --app to choose another)", name, filepath.Join(parent, "app.yaml")))
		} else {
			m.App.Name = sanitizeName(filepath.Base(parent))
			m.Notes = append(m.Notes, fmt.Sprintf("app %s (an Fn project names no app: taken from the parent directory's name; --app to choose another)", m.App.Name))
		}
	}
	m.App.line = root.Line

	rt, ok := fnRuntime(f.Runtime)
	if !ok {
		return m.errAt(keyLine(root, "runtime"), "runtime %q: kiln builds go, python and node; build the image elsewhere and set image:, or kiln images import it", f.Runtime)
	}
	format := f.Format
	if format == "" {
		// Every Fn FDK since 2018 speaks http-stream, and only it.
		format = "http-stream"
		m.Notes = append(m.Notes, "func.yaml: no format: using http-stream, Fn's")
	}
	fn := fnSpec{
		Name: f.Name, Runtime: rt, Image: f.Image, Format: format, Memory: f.Memory,
		Timeout: f.Timeout, IdleTimeout: f.IdleTimeout, Config: f.Config, Annotations: f.Annotations,
		line: root.Line,
	}
	if rt != "" && f.Image == "" {
		fn.Build = "."
	}
	if rt == "" && f.Image == "" {
		return m.errAt(root.Line, "func.yaml names neither a runtime kiln builds (go, python, node) nor an image:")
	}
	trNodes := mapValue(root, "triggers")
	for j, t := range f.Triggers {
		tl := root.Line
		if trNodes != nil && j < len(trNodes.Content) {
			tl = trNodes.Content[j].Line
		}
		fn.Triggers = append(fn.Triggers, triggerSpec{Name: t.Name, Type: t.Type, Source: t.Source, Annotations: t.Annotations, line: tl})
	}
	m.Fns = []fnSpec{fn}
	return nil
}

// fnAppYAML is the name in an Fn app.yaml, if there is one.
func fnAppYAML(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var a struct {
		Name string `yaml:"name"`
	}
	if yaml.Unmarshal(data, &a) != nil {
		return ""
	}
	return a.Name
}

var nameOK = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// validate checks what kilnd would refuse (and what it would accept but
// the user cannot have meant), before anything is built or changed.
func (m *manifest) validate() error {
	if m.App.Name == "" {
		return m.errAt(m.App.line, "app: required (the app the fns belong to)")
	}
	if !nameOK.MatchString(m.App.Name) {
		return m.errAt(m.App.line, "app %q: use letters, digits, '_', '-' and '.'", m.App.Name)
	}
	fnNames := map[string]int{}
	trNames := map[string]int{}
	sources := map[string]int{}
	for i := range m.Fns {
		fn := &m.Fns[i]
		if fn.Name == "" {
			return m.errAt(fn.line, "fn: name: required")
		}
		if !nameOK.MatchString(fn.Name) {
			return m.errAt(fn.line, "fn %q: use letters, digits, '_', '-' and '.'", fn.Name)
		}
		if l, dup := fnNames[fn.Name]; dup {
			return m.errAt(fn.line, "fn %q is named twice (also line %d)", fn.Name, l)
		}
		fnNames[fn.Name] = fn.line
		what := fmt.Sprintf("fn %s", fn.Name)
		switch {
		case fn.Runtime != "" && fn.Archive != "":
			return m.errAt(fn.line, "%s: give runtime (to build) or archive (to import), not both", what)
		case fn.Runtime == "" && fn.Archive == "" && fn.Image == "":
			return m.errAt(fn.line, "%s: give runtime (to build it from source), archive (an image tar) or image", what)
		case fn.Build != "" && fn.Runtime == "":
			return m.errAt(fn.line, "%s: build: needs runtime:", what)
		}
		if fn.Runtime != "" {
			if !slices.Contains(imagebuild.Runtimes(), fn.Runtime) {
				return m.errAt(fn.line, "%s: unknown runtime %q: want one of %s", what, fn.Runtime, strings.Join(imagebuild.Runtimes(), ", "))
			}
			if fn.Build == "" {
				fn.Build = "."
			}
			if fi, err := os.Stat(m.abs(fn.Build)); err != nil || !fi.IsDir() {
				return m.errAt(fn.line, "%s: build directory %s does not exist", what, fn.Build)
			}
		}
		if fn.Archive != "" {
			if fi, err := os.Stat(m.abs(fn.Archive)); err != nil || !fi.Mode().IsRegular() {
				return m.errAt(fn.line, "%s: archive %s is not a file", what, fn.Archive)
			}
		}
		if fn.Format != "" && !slices.Contains(formats, fn.Format) {
			return m.errAt(fn.line, "%s: unknown format %q: want one of %s", what, fn.Format, strings.Join(formats, ", "))
		}
		if fn.Runtime == imagebuild.RuntimeShell && fn.Format != "" && fn.Format != "default" {
			return m.errAt(fn.line, "%s: the shell runtime speaks only the default format (a container per call), not %s", what, fn.Format)
		}
		for _, v := range []struct {
			name string
			n    int64
		}{{"memory", fn.Memory}, {"timeout", int64(fn.Timeout)}, {"idle_timeout", int64(fn.IdleTimeout)}} {
			if v.n < 0 {
				return m.errAt(fn.line, "%s: %s must be positive (or left out for kilnd's default)", what, v.name)
			}
		}
		for k, v := range fn.Scaling {
			if v < 0 {
				return m.errAt(fn.line, "%s: %s must not be negative (0 leaves it unset)", what, scalingKnobs[k][1])
			}
		}
		seen := map[string]bool{}
		for _, s := range fn.Secrets {
			if !nameOK.MatchString(s) {
				return m.errAt(fn.line, "%s: secret name %q: use letters, digits, '_', '-' and '.'", what, s)
			}
			if seen[s] {
				return m.errAt(fn.line, "%s: secret %s is named twice", what, s)
			}
			seen[s] = true
		}
		for j := range fn.Triggers {
			t := &fn.Triggers[j]
			if t.Name == "" {
				return m.errAt(t.line, "%s: trigger: name: required", what)
			}
			if l, dup := trNames[t.Name]; dup {
				return m.errAt(t.line, "trigger %q is named twice (also line %d): trigger names are unique in an app", t.Name, l)
			}
			trNames[t.Name] = t.line
			if t.Type == "" {
				t.Type = "http"
			}
			switch t.Type {
			case "http":
				if !strings.HasPrefix(t.Source, "/") {
					return m.errAt(t.line, "trigger %s: source %q: an http trigger's source is a path starting with /", t.Name, t.Source)
				}
				if l, dup := sources[t.Source]; dup {
					return m.errAt(t.line, "trigger %s: source %s is taken by another trigger (line %d)", t.Name, t.Source, l)
				}
				sources[t.Source] = t.line
			case "cron":
				if t.Source == "" {
					return m.errAt(t.line, "trigger %s: a cron trigger's source is its schedule, e.g. \"@every 1m\"", t.Name)
				}
			default:
				return m.errAt(t.line, "trigger %s: type %q: want http or cron", t.Name, t.Type)
			}
		}
	}
	return nil
}

func (m *manifest) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(m.Dir, p)
}

func docRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		return doc.Content[0]
	}
	if doc.Kind == 0 {
		return nil
	}
	return doc
}

// mapValue is the value node of key in a mapping node.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func keyLine(n *yaml.Node, key string) int {
	if n == nil || n.Kind != yaml.MappingNode {
		return 0
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i].Line
		}
	}
	return 0
}

var (
	yamlLineRE    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	yamlUnknownRE = regexp.MustCompile(`field (\S+) not found in type \S+`)
	yamlTypeRE    = regexp.MustCompile(` into (\S+\.)?\S+$`)
)

// prefixYAMLErr turns yaml.v3's "yaml: line 7: ..." (one or several, for
// type errors) into "FILE:7: ..." lines, and its Go type names into words.
func prefixYAMLErr(path string, err error) string {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimSpace(m)
		line := ""
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			line, m = sm[1], sm[2]
		}
		m = yamlUnknownRE.ReplaceAllString(m, "unknown field $1")
		if strings.HasPrefix(m, "cannot unmarshal") {
			m = yamlTypeRE.ReplaceAllStringFunc(m, func(s string) string {
				t := s[strings.LastIndex(s, ".")+1:]
				t = strings.TrimPrefix(t, " into ")
				switch {
				case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
					return " into a whole number"
				case strings.HasPrefix(t, "map"):
					return " into a mapping"
				case strings.HasPrefix(t, "[]"):
					return " into a list"
				case t == "string":
					return " into a string"
				}
				return " into " + t
			})
		}
		if line != "" {
			if _, err := strconv.Atoi(line); err == nil {
				out = append(out, fmt.Sprintf("%s:%s: %s", path, line, m))
				continue
			}
		}
		out = append(out, fmt.Sprintf("%s: %s", path, strings.TrimPrefix(m, "yaml: ")))
	}
	return strings.Join(out, "\n")
}

// sanitizeName makes a directory name usable as an app name.
func sanitizeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return strings.Trim(b.String(), "-.")
}
