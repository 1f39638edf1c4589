package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/distribution/reference"
	"github.com/spf13/cobra"

	"github.com/kiln-run/kiln/imagebuild"
)

func (c *cli) deployCmd() *cobra.Command {
	var (
		file, app, platform, base string
		prune, dryRun             bool
	)
	cmd := &cobra.Command{
		Use:   "deploy [-f kiln.yaml]",
		Short: "Build and deploy what a kiln.yaml (or an Fn func.yaml) describes",
		Long: "Deploy reads kiln.yaml (else kiln.yml, func.yaml, func.yml) in the current directory,\n" +
			"or -f FILE, and makes kilnd match it: it builds each fn's image (or imports its\n" +
			"archive), then creates or updates the app, its fns and their triggers, and prints\n" +
			"what changed, or \"no change\". It is safe to run again.\n\n" +
			"It changes only what the file sets: fields it leaves out, config keys and\n" +
			"annotations it does not name, and fns and triggers it does not list are left as\n" +
			"they are. --prune also removes, in the file's app, the fns, triggers, config keys\n" +
			"and annotations the file no longer names.\n\n" +
			"Everything is checked and every image built before anything on kilnd changes; if\n" +
			"kilnd refuses a step, deploy stops and says what it had changed already.\n\n" +
			"An Fn func.yaml deploys as it is (name, runtime or image, format, memory, timeout,\n" +
			"idle_timeout, config, annotations, triggers). It names no app: --app, else the\n" +
			"name in ../app.yaml, else the parent directory's name.",
		Example: "  kiln init --runtime python hello && cd hello && kiln deploy\n" +
			"  kiln deploy -f services/kiln.yaml --prune\n" +
			"  kiln deploy --dry-run",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			path, err := findManifest(".", file)
			if err != nil {
				return err
			}
			m, err := loadManifest(path, app)
			if err != nil {
				return err
			}
			for _, n := range m.Notes {
				fmt.Fprintf(c.stderr, "kiln: %s\n", n)
			}
			plat, err := imagebuild.ParsePlatform(platform)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			st, err := fetchState(ctx, cl, m.App.Name)
			if err != nil {
				return err
			}
			c.checkSecrets(ctx, cl, m, st)
			imgs, cleanup, err := c.prepareImages(ctx, cl, m, plat, base)
			defer cleanup()
			if err != nil {
				return err
			}
			changes, err := planDeploy(m, st, imgs, prune)
			if err != nil {
				return err
			}
			if dryRun {
				return c.reportPlan(changes, true)
			}
			done, err := c.applyDeploy(ctx, cl, st, changes)
			if err != nil {
				if len(done) == 0 {
					fmt.Fprintln(c.stderr, "kiln: nothing on kilnd was changed")
				} else {
					fmt.Fprintln(c.stderr, "kiln: changed before the failure (the rest was not done):")
					for _, d := range done {
						fmt.Fprintf(c.stderr, "  %s\n", d.describe(false))
					}
				}
				return err
			}
			if err := c.reportPlan(done, false); err != nil {
				return err
			}
			if len(done) > 0 && !c.structured() {
				for _, fn := range m.Fns {
					for _, t := range fn.Triggers {
						if t.Type == "http" {
							fmt.Fprintf(c.stdout, "endpoint %s\n", cl.url("/t/"+seg(m.App.Name)+t.Source, nil))
						}
					}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the file to deploy (default: kiln.yaml, else func.yaml, in this directory)")
	f.StringVar(&app, "app", "", "app to deploy into: needed by an Fn func.yaml, which names none; overrides a kiln.yaml's")
	f.BoolVar(&prune, "prune", false, "also remove the app's fns, triggers, config keys and annotations the file does not name")
	f.BoolVar(&dryRun, "dry-run", false, "build and print what would change, without changing it")
	f.StringVar(&platform, "platform", "", "platform to build images for (default: this machine's)")
	f.StringVar(&base, "base", imagebuild.BaseAuto, "python/node base: "+strings.Join(imagebuild.BaseSources(), ", ")+" (see kiln build --help)")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

// serverState is what kilnd has of the app a file deploys.
type serverState struct {
	App      *appResource
	Fns      []fnResource
	Triggers []triggerResource
}

func fetchState(ctx context.Context, cl *client, app string) (serverState, error) {
	var st serverState
	a, _, err := cl.appByName(ctx, app)
	if isNotFound(err) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st.App = &a
	if st.Fns, _, err = listInto[fnResource](ctx, cl, "/v2/fns", url.Values{"app_id": {a.ID}}); err != nil {
		return st, err
	}
	if st.Triggers, _, err = listInto[triggerResource](ctx, cl, "/v2/triggers", url.Values{"app_id": {a.ID}}); err != nil {
		return st, err
	}
	return st, nil
}

// fnImage is the image a fn of the file runs, once built or read.
type fnImage struct {
	Ref string
	// Archive is a local image tar to import; empty when kilnd has the
	// image already or the fn names an image kilnd pulls.
	Archive string
	Digest  string
}

// defaultImageRef names a built image when the file does not: by app,
// fn and content, under a registry host that cannot exist, so kilnd never
// tries to pull it from anywhere.
func defaultImageRef(app, fn string) string {
	clean := func(s string) string {
		s = strings.ToLower(sanitizeName(s))
		s = strings.Trim(strings.ReplaceAll(s, "_", "-"), "-.")
		if s == "" {
			s = "fn"
		}
		return s
	}
	return "kiln.local/" + clean(app) + "/" + clean(fn) + ":" + imagebuild.DigestTag
}

// prepareImages builds every fn that has a runtime and reads the names in
// every archive, before anything changes; an image kilnd already holds
// with the same digest is not imported again.
func (c *cli) prepareImages(ctx context.Context, cl *client, m *manifest, plat imagebuild.Platform, base string) (map[string]fnImage, func(), error) {
	var temps []string
	cleanup := func() {
		for _, t := range temps {
			os.Remove(t)
		}
	}
	have, err := kilndImages(ctx, cl)
	if err != nil {
		return nil, cleanup, err
	}
	out := map[string]fnImage{}
	for _, fn := range m.Fns {
		switch {
		case fn.Runtime != "":
			ref := fn.Image
			if ref == "" {
				ref = defaultImageRef(m.App.Name, fn.Name)
			}
			tmp, err := os.CreateTemp("", "kiln-deploy-*.tar")
			if err != nil {
				return nil, cleanup, err
			}
			tmp.Close()
			temps = append(temps, tmp.Name())
			fmt.Fprintf(c.stderr, "building fn %s (%s) from %s\n", fn.Name, fn.Runtime, m.abs(fn.Build))
			dgst, err := writeImageFile(ctx, tmp.Name(), imagebuild.BuildOptions{
				Dir: m.abs(fn.Build), Ref: ref, Runtime: fn.Runtime, Progress: c.stderr, Platform: plat,
				Base: imagebuild.BaseOptions{CacheDir: imagebuild.CacheDirFrom(c.getenv), Source: base},
			})
			if err != nil {
				return nil, cleanup, fmt.Errorf("building fn %s: %w", fn.Name, err)
			}
			img := fnImage{Ref: imagebuild.ResolveRef(ref, dgst), Archive: tmp.Name(), Digest: dgst}
			if d, ok := have[normalizeRef(img.Ref)]; ok && d == dgst {
				img.Archive = ""
			}
			out[fn.Name] = img
		case fn.Archive != "":
			names, dgst, err := archiveNames(m.abs(fn.Archive))
			if err != nil {
				return nil, cleanup, fmt.Errorf("fn %s: archive %s: %w", fn.Name, fn.Archive, err)
			}
			ref := fn.Image
			switch {
			case ref != "" && !slices.ContainsFunc(names, func(n string) bool { return normalizeRef(n) == normalizeRef(ref) }):
				return nil, cleanup, fmt.Errorf("fn %s: archive %s holds %s, not image %s", fn.Name, fn.Archive, strings.Join(names, ", "), ref)
			case ref == "" && len(names) == 1:
				ref = names[0]
			case ref == "":
				return nil, cleanup, fmt.Errorf("fn %s: archive %s holds %d images (%s): say which with image:", fn.Name, fn.Archive, len(names), strings.Join(names, ", "))
			}
			img := fnImage{Ref: ref, Archive: m.abs(fn.Archive), Digest: dgst}
			if d, ok := have[normalizeRef(ref)]; ok && dgst != "" && d == dgst {
				img.Archive = ""
			}
			out[fn.Name] = img
		default:
			if _, ok := have[normalizeRef(fn.Image)]; !ok && have != nil {
				fmt.Fprintf(c.stderr, "kiln: kilnd has no image %s yet: it pulls it on the fn's first call\n", fn.Image)
			}
			out[fn.Name] = fnImage{Ref: fn.Image}
		}
	}
	return out, cleanup, nil
}

// writeImageFile is writeImage without a cobra command.
func writeImageFile(ctx context.Context, path string, opts imagebuild.BuildOptions) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	dgst, _, err := imagebuild.Build(ctx, f, opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", err
	}
	return dgst, nil
}

// kilndImages maps the images kilnd holds (names normalized) to their
// digests; nil when this kilnd cannot list them.
func kilndImages(ctx context.Context, cl *client) (map[string]string, error) {
	imgs, _, err := listInto[imageResource](ctx, cl, "/v2/images", nil)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			// No image service (kilnd without containerd images): every
			// archive is imported, which kilnd will then refuse clearly.
			return nil, nil
		}
		return nil, err
	}
	out := make(map[string]string, len(imgs))
	for _, im := range imgs {
		out[normalizeRef(im.Name)] = im.Digest
	}
	return out, nil
}

// normalizeRef spells a reference the way containerd stores it, so
// "hello:1" and "docker.io/library/hello:1" compare equal.
func normalizeRef(s string) string {
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return s
	}
	return reference.TagNameOnly(n).String()
}

// archiveNames reads the image names in an OCI or docker archive, and for
// an OCI archive of one image its manifest digest (which containerd keeps).
func archiveNames(path string) ([]string, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	dgst := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", fmt.Errorf("not a tar archive: %w", err)
		}
		switch strings.TrimPrefix(h.Name, "./") {
		case "index.json":
			var idx struct {
				Manifests []struct {
					Digest      string            `json:"digest"`
					Annotations map[string]string `json:"annotations"`
				} `json:"manifests"`
			}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&idx); err != nil {
				return nil, "", fmt.Errorf("index.json: %w", err)
			}
			for _, md := range idx.Manifests {
				n := md.Annotations[imagebuild.AnnotationImageName]
				if n == "" {
					n = md.Annotations["org.opencontainers.image.ref.name"]
				}
				if n != "" {
					names = append(names, n)
				}
			}
			if len(idx.Manifests) == 1 {
				dgst = idx.Manifests[0].Digest
			}
		case "manifest.json":
			var mf []struct {
				RepoTags []string `json:"RepoTags"`
			}
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&mf); err != nil {
				return nil, "", fmt.Errorf("manifest.json: %w", err)
			}
			for _, e := range mf {
				names = append(names, e.RepoTags...)
			}
		}
	}
	if len(names) == 0 {
		return nil, "", errors.New("it names no image (no io.containerd.image.name, ref name or RepoTags)")
	}
	return names, dgst, nil
}

// checkSecrets warns about secrets a fn names that its app does not have:
// the deploy goes on (the secret may be created next), but the fn's calls
// cannot work until it is.
func (c *cli) checkSecrets(ctx context.Context, cl *client, m *manifest, st serverState) {
	var want []string
	for _, fn := range m.Fns {
		want = append(want, fn.Secrets...)
	}
	if len(want) == 0 {
		return
	}
	have := map[string]bool{}
	if st.App != nil {
		items, _, err := listInto[secretResource](ctx, cl, "/v2/apps/"+seg(st.App.ID)+"/secrets", nil)
		if isNotFound(err) {
			fmt.Fprintln(c.stderr, "kiln: this kilnd has no secrets API yet: the fns' secrets are recorded but not mounted")
			return
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "kiln: cannot list the app's secrets: %v\n", err)
			return
		}
		for _, s := range items {
			have[s.Name] = true
		}
	}
	for _, fn := range m.Fns {
		for _, s := range fn.Secrets {
			if !have[s] {
				fmt.Fprintf(c.stderr, "kiln: fn %s names secret %s, which app %s does not have: kiln secrets create %s %s\n", fn.Name, s, m.App.Name, m.App.Name, s)
			}
		}
	}
}

// change is one step of a deploy: what it does, to what, and the request
// body that does it.
type change struct {
	Kind   string   `json:"kind"`   // app, image, fn, trigger
	Name   string   `json:"name"`   // its name
	Action string   `json:"action"` // create, update, delete, replace, import
	Fields []string `json:"fields,omitempty"`

	id      string         // of the app, fn or trigger changed
	body    map[string]any // sent on create / update
	fnName  string         // a trigger's fn, resolved to an id when applied
	archive string         // an image to import
}

func (ch change) describe(dry bool) string {
	verb := map[string]string{"create": "created", "update": "updated", "delete": "deleted", "replace": "replaced", "import": "imported"}[ch.Action]
	if dry {
		verb = "would be " + verb
	}
	s := fmt.Sprintf("%s %s: %s", ch.Kind, ch.Name, verb)
	if len(ch.Fields) > 0 {
		s += " (" + strings.Join(ch.Fields, ", ") + ")"
	}
	return s
}

// planDeploy compares the file with kilnd's state and lists the steps
// that make them match, in the order they are applied: app, images, fns,
// trigger removals, trigger creations and updates, fn removals. An empty
// list means nothing to do. It errors on conflicts it can see coming (a
// trigger source held by a trigger the file does not name).
func planDeploy(m *manifest, st serverState, imgs map[string]fnImage, prune bool) ([]change, error) {
	var out []change
	appID := ""
	if st.App == nil {
		body := map[string]any{"name": m.App.Name}
		var fields []string
		if len(m.App.Config) > 0 {
			body["config"] = m.App.Config
			fields = append(fields, "config "+strings.Join(sortedKeys(m.App.Config), ", "))
		}
		if len(m.App.Annotations) > 0 {
			body["annotations"] = m.App.Annotations
			fields = append(fields, "annotations "+strings.Join(sortedKeys(m.App.Annotations), ", "))
		}
		out = append(out, change{Kind: "app", Name: m.App.Name, Action: "create", Fields: fields, body: body})
	} else {
		appID = st.App.ID
		body, fields := diffMaps(st.App.Config, m.App.Config, st.App.Annotations, m.App.Annotations, prune)
		if len(body) > 0 {
			out = append(out, change{Kind: "app", Name: m.App.Name, Action: "update", Fields: fields, id: appID, body: body})
		}
	}

	imported := map[string]bool{}
	for _, fn := range m.Fns {
		img := imgs[fn.Name]
		if img.Archive != "" && !imported[img.Ref] {
			imported[img.Ref] = true
			fields := []string{}
			if img.Digest != "" {
				fields = append(fields, shortDigest(img.Digest))
			}
			out = append(out, change{Kind: "image", Name: img.Ref, Action: "import", Fields: fields, archive: img.Archive})
		}
	}

	byName := map[string]fnResource{}
	for _, f := range st.Fns {
		byName[f.Name] = f
	}
	for _, fn := range m.Fns {
		image := imgs[fn.Name].Ref
		cur, exists := byName[fn.Name]
		if !exists {
			body, fields := fnCreateBody(fn, image)
			out = append(out, change{Kind: "fn", Name: fn.Name, Action: "create", Fields: fields, body: body})
			continue
		}
		body, fields := fnUpdateBody(fn, image, cur, prune)
		if len(body) > 0 {
			out = append(out, change{Kind: "fn", Name: fn.Name, Action: "update", Fields: fields, id: cur.ID, body: body})
		}
	}

	// Triggers: by name within the app.
	fnIDs := map[string]string{}
	for _, f := range st.Fns {
		fnIDs[f.ID] = f.Name
	}
	curTr := map[string]triggerResource{}
	for _, t := range st.Triggers {
		curTr[t.Name] = t
	}
	wanted := map[string]bool{}
	var deletes, upserts []change
	for _, fn := range m.Fns {
		for _, t := range fn.Triggers {
			wanted[t.Name] = true
		}
	}
	bySource := map[string]triggerResource{}
	for _, t := range st.Triggers {
		if t.Type == "http" {
			bySource[t.Source] = t
		}
	}
	for _, fn := range m.Fns {
		for _, t := range fn.Triggers {
			create := func(action string, fields []string) change {
				body := map[string]any{"name": t.Name, "type": t.Type, "source": t.Source}
				if len(t.Annotations) > 0 {
					body["annotations"] = t.Annotations
				}
				if fields == nil {
					fields = []string{t.Type + " " + t.Source + " -> fn " + fn.Name}
				}
				return change{Kind: "trigger", Name: t.Name, Action: action, Fields: fields, body: body, fnName: fn.Name}
			}
			if holder, ok := bySource[t.Source]; ok && t.Type == "http" && holder.Name != t.Name && !wanted[holder.Name] && !prune {
				return nil, m.errAt(t.line, "trigger %s: source %s is held by trigger %s (fn %s), which this file does not name: rename one, or deploy with --prune to remove %s",
					t.Name, t.Source, holder.Name, orDash(fnIDs[holder.FnID]), holder.Name)
			}
			cur, exists := curTr[t.Name]
			switch {
			case !exists:
				upserts = append(upserts, create("create", nil))
			case fnIDs[cur.FnID] != fn.Name || cur.Type != t.Type:
				// A trigger's fn and type are its identity: it is
				// replaced, not edited.
				deletes = append(deletes, change{Kind: "trigger", Name: t.Name, Action: "delete", id: cur.ID,
					Fields: []string{"to be recreated for fn " + fn.Name}})
				upserts = append(upserts, create("create", []string{fmt.Sprintf("%s %s -> fn %s (was fn %s)", t.Type, t.Source, fn.Name, orDash(fnIDs[cur.FnID]))}))
			default:
				body := map[string]any{}
				var fields []string
				if cur.Source != t.Source {
					body["source"] = t.Source
					fields = append(fields, fmt.Sprintf("source %s -> %s", cur.Source, t.Source))
				}
				if ab, af := diffAnnotations(cur.Annotations, t.Annotations, prune); len(ab) > 0 {
					body["annotations"] = ab
					fields = append(fields, af...)
				}
				if len(body) > 0 {
					upserts = append(upserts, change{Kind: "trigger", Name: t.Name, Action: "update", Fields: fields, id: cur.ID, body: body})
				}
			}
		}
	}
	var fnDeletes []change
	if prune {
		names := map[string]bool{}
		for _, fn := range m.Fns {
			names[fn.Name] = true
		}
		for _, t := range st.Triggers {
			if !wanted[t.Name] {
				deletes = append(deletes, change{Kind: "trigger", Name: t.Name, Action: "delete", id: t.ID, Fields: []string{"pruned"}})
			}
		}
		for _, f := range st.Fns {
			if !names[f.Name] {
				fnDeletes = append(fnDeletes, change{Kind: "fn", Name: f.Name, Action: "delete", id: f.ID, Fields: []string{"pruned"}})
			}
		}
	}
	out = append(out, deletes...)
	out = append(out, upserts...)
	out = append(out, fnDeletes...)
	return out, nil
}

// defaultFormat is the format a new fn gets when the file sets none: a hot
// one where kiln's FDKs run, default for the shell runtime (all it speaks).
func defaultFormat(fn fnSpec) string {
	switch fn.Runtime {
	case imagebuild.RuntimeShell:
		return "default"
	case "":
		return "json-http"
	}
	return "http-stream"
}

func fnCreateBody(fn fnSpec, image string) (map[string]any, []string) {
	body := map[string]any{"name": fn.Name, "image": image}
	format := fn.Format
	fields := []string{"image " + image}
	if format == "" {
		format = defaultFormat(fn)
		fields = append(fields, "format "+format+" (the file sets none)")
	} else {
		fields = append(fields, "format "+format)
	}
	body["format"] = format
	if fn.Memory > 0 {
		body["memory"] = fn.Memory
		fields = append(fields, fmt.Sprintf("memory %d MB", fn.Memory))
	}
	if fn.CPUs != nil {
		body["cpus"] = *fn.CPUs
		fields = append(fields, "cpus "+fmtCPUs(*fn.CPUs))
	}
	if fn.Timeout > 0 {
		body["timeout"] = fn.Timeout
		fields = append(fields, fmt.Sprintf("timeout %ds", fn.Timeout))
	}
	if fn.IdleTimeout > 0 {
		body["idle_timeout"] = fn.IdleTimeout
		fields = append(fields, fmt.Sprintf("idle_timeout %ds", fn.IdleTimeout))
	}
	if len(fn.Config) > 0 {
		body["config"] = fn.Config
		fields = append(fields, "config "+strings.Join(sortedKeys(fn.Config), ", "))
	}
	if len(fn.Annotations) > 0 {
		body["annotations"] = fn.Annotations
		fields = append(fields, "annotations "+strings.Join(sortedKeys(fn.Annotations), ", "))
	}
	if len(fn.Secrets) > 0 {
		body["secrets"] = fn.Secrets
		fields = append(fields, "secrets "+strings.Join(fn.Secrets, ", "))
	}
	for i, v := range fn.Scaling {
		if v > 0 {
			body[scalingKnobs[i][1]] = v
			fields = append(fields, fmt.Sprintf("%s %d", scalingKnobs[i][1], v))
		}
	}
	return body, fields
}

func fnUpdateBody(fn fnSpec, image string, cur fnResource, prune bool) (map[string]any, []string) {
	body := map[string]any{}
	var fields []string
	if image != "" && image != cur.Image {
		body["image"] = image
		fields = append(fields, fmt.Sprintf("image %s -> %s", cur.Image, image))
	}
	if fn.Format != "" && fn.Format != cur.Format {
		body["format"] = fn.Format
		fields = append(fields, fmt.Sprintf("format %s -> %s", orDash(cur.Format), fn.Format))
	}
	if fn.Memory > 0 && fn.Memory != cur.Memory {
		body["memory"] = fn.Memory
		fields = append(fields, fmt.Sprintf("memory %d -> %d MB", cur.Memory, fn.Memory))
	}
	if fn.CPUs != nil && *fn.CPUs != cur.CPUs {
		body["cpus"] = *fn.CPUs
		fields = append(fields, fmt.Sprintf("cpus %s -> %s", fmtCPUs(cur.CPUs), fmtCPUs(*fn.CPUs)))
	}
	if fn.Timeout > 0 && fn.Timeout != cur.Timeout {
		body["timeout"] = fn.Timeout
		fields = append(fields, fmt.Sprintf("timeout %ds -> %ds", cur.Timeout, fn.Timeout))
	}
	if fn.IdleTimeout > 0 && fn.IdleTimeout != cur.IdleTimeout {
		body["idle_timeout"] = fn.IdleTimeout
		fields = append(fields, fmt.Sprintf("idle_timeout %ds -> %ds", cur.IdleTimeout, fn.IdleTimeout))
	}
	cb, cf := diffMaps(cur.Config, fn.Config, cur.Annotations, fn.Annotations, prune)
	for k, v := range cb {
		body[k] = v
	}
	fields = append(fields, cf...)
	if fn.SecretsSet {
		want := slices.Clone(fn.Secrets)
		have := slices.Clone(cur.Secrets)
		sort.Strings(want)
		sort.Strings(have)
		if !slices.Equal(want, have) {
			list := fn.Secrets
			if list == nil {
				list = []string{}
			}
			body["secrets"] = list
			fields = append(fields, fmt.Sprintf("secrets [%s] -> [%s]", strings.Join(have, " "), strings.Join(want, " ")))
		}
	}
	curKnobs := [4]int{cur.MaxConcurrency, cur.MaxInstances, cur.MinWarm, cur.MaxRequests}
	for i, v := range fn.Scaling {
		if v > 0 && v != curKnobs[i] {
			body[scalingKnobs[i][1]] = v
			fields = append(fields, fmt.Sprintf("%s %d -> %d", scalingKnobs[i][1], curKnobs[i], v))
		}
	}
	return body, fields
}

// diffMaps is the PUT body for config and annotations: the keys the file
// sets that differ, and with prune the keys it does not name, removed
// (kilnd removes a key sent empty, or an annotation sent null).
func diffMaps(curCfg, wantCfg map[string]string, curAnn, wantAnn map[string]any, prune bool) (map[string]any, []string) {
	body := map[string]any{}
	var fields []string
	cfg := map[string]string{}
	for _, k := range sortedKeys(wantCfg) {
		if old, ok := curCfg[k]; !ok || old != wantCfg[k] {
			cfg[k] = wantCfg[k]
			if ok {
				fields = append(fields, "config "+k+" changed")
			} else {
				fields = append(fields, "config "+k+" set")
			}
		}
	}
	if prune {
		for _, k := range sortedKeys(curCfg) {
			if _, ok := wantCfg[k]; !ok {
				cfg[k] = ""
				fields = append(fields, "config "+k+" removed")
			}
		}
	}
	if len(cfg) > 0 {
		body["config"] = cfg
	}
	if ab, af := diffAnnotations(curAnn, wantAnn, prune); len(ab) > 0 {
		body["annotations"] = ab
		fields = append(fields, af...)
	}
	return body, fields
}

func diffAnnotations(cur, want map[string]any, prune bool) (map[string]any, []string) {
	body := map[string]any{}
	var fields []string
	for _, k := range sortedKeys(want) {
		old, ok := cur[k]
		if !ok || !sameJSON(old, want[k]) {
			body[k] = want[k]
			if ok {
				fields = append(fields, "annotation "+k+" changed")
			} else {
				fields = append(fields, "annotation "+k+" set")
			}
		}
	}
	if prune {
		for _, k := range sortedKeys(cur) {
			if _, ok := want[k]; !ok {
				body[k] = nil
				fields = append(fields, "annotation "+k+" removed")
			}
		}
	}
	return body, fields
}

// sameJSON compares two values as JSON: YAML's 1 and the server's 1.0
// are one annotation.
func sameJSON(a, b any) bool {
	norm := func(v any) any {
		raw, err := json.Marshal(v)
		if err != nil {
			return v
		}
		var out any
		_ = json.Unmarshal(raw, &out)
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// applyDeploy runs the steps in order and returns those done. The first
// refusal stops it: what was done stays (each step is a complete API
// call, and undoing steps could fail in turn), and the caller lists it.
func (c *cli) applyDeploy(ctx context.Context, cl *client, st serverState, changes []change) ([]change, error) {
	var done []change
	appID := ""
	if st.App != nil {
		appID = st.App.ID
	}
	fnIDs := map[string]string{}
	for _, f := range st.Fns {
		fnIDs[f.Name] = f.ID
	}
	oldImages := map[string]string{}
	for _, ch := range changes {
		var err error
		switch ch.Kind + " " + ch.Action {
		case "app create":
			var a appResource
			if _, err = cl.jsonCall(ctx, http.MethodPost, "/v2/apps", nil, ch.body, &a); err == nil {
				appID = a.ID
			}
		case "app update":
			_, err = cl.jsonCall(ctx, http.MethodPut, "/v2/apps/"+seg(ch.id), nil, ch.body, nil)
		case "image import":
			_, _, err = c.importArchiveAs(ctx, cl, ch.archive, ch.Name)
		case "fn create":
			ch.body["app_id"] = appID
			var f fnResource
			if _, err = cl.jsonCall(ctx, http.MethodPost, "/v2/fns", nil, ch.body, &f); err == nil {
				fnIDs[ch.Name] = f.ID
				c.warnDropped(ch, f)
			}
		case "fn update":
			for _, f := range st.Fns {
				if f.ID == ch.id {
					oldImages[ch.Name] = f.Image
				}
			}
			var f fnResource
			if _, err = cl.jsonCall(ctx, http.MethodPut, "/v2/fns/"+seg(ch.id), nil, ch.body, &f); err == nil {
				c.warnDropped(ch, f)
			}
		case "fn delete":
			_, err = cl.jsonCall(ctx, http.MethodDelete, "/v2/fns/"+seg(ch.id), nil, nil, nil)
		case "trigger create":
			ch.body["app_id"] = appID
			ch.body["fn_id"] = fnIDs[ch.fnName]
			_, err = cl.jsonCall(ctx, http.MethodPost, "/v2/triggers", nil, ch.body, nil)
		case "trigger update":
			_, err = cl.jsonCall(ctx, http.MethodPut, "/v2/triggers/"+seg(ch.id), nil, ch.body, nil)
		case "trigger delete":
			_, err = cl.jsonCall(ctx, http.MethodDelete, "/v2/triggers/"+seg(ch.id), nil, nil, nil)
		default:
			err = fmt.Errorf("internal: unknown step %s %s", ch.Kind, ch.Action)
		}
		if err != nil {
			return done, fmt.Errorf("%s %s: %s: %w", ch.Action, ch.Kind, ch.Name, err)
		}
		done = append(done, ch)
	}
	// Images deploy built and no fn runs any more are removed, so a
	// deploy per edit does not fill kilnd's disk; kilnd refuses (409) to
	// remove one another fn still uses, which is fine.
	for name, old := range oldImages {
		if !strings.HasPrefix(old, "kiln.local/") {
			continue
		}
		var cur string
		for _, ch := range done {
			if ch.Kind == "fn" && ch.Name == name {
				cur, _ = ch.body["image"].(string)
			}
		}
		if cur == "" || cur == old {
			continue
		}
		parts := strings.Split(old, "/")
		for i, p := range parts {
			parts[i] = seg(p)
		}
		if _, err := cl.jsonCall(ctx, http.MethodDelete, "/v2/images/"+strings.Join(parts, "/"), nil, nil, nil); err == nil {
			fmt.Fprintf(c.stderr, "kiln: removed the image fn %s ran before, %s\n", name, old)
		}
	}
	return done, nil
}

// warnDropped says when kilnd answered without a field deploy sent: a
// kilnd older than the file (secrets, scaling knobs) ignores what it does
// not know, and the next deploy would report the same change again.
func (c *cli) warnDropped(ch change, f fnResource) {
	if s, ok := ch.body["secrets"].([]string); ok && len(s) > 0 && len(f.Secrets) == 0 {
		fmt.Fprintf(c.stderr, "kiln: kilnd did not keep fn %s's secrets: it is older than this kiln and will not mount them\n", ch.Name)
	}
	got := [4]int{f.MaxConcurrency, f.MaxInstances, f.MinWarm, f.MaxRequests}
	for i, k := range scalingKnobs {
		if v, ok := ch.body[k[1]].(int); ok && v != got[i] {
			fmt.Fprintf(c.stderr, "kiln: kilnd did not keep fn %s's %s (%d): it is older than this kiln\n", ch.Name, k[1], v)
		}
	}
}

// reportPlan prints the steps, or "no change".
func (c *cli) reportPlan(changes []change, dry bool) error {
	if c.structured() {
		if changes == nil {
			changes = []change{}
		}
		return c.printValue(map[string]any{"changes": changes, "dry_run": dry})
	}
	if len(changes) == 0 {
		_, err := fmt.Fprintln(c.stdout, "no change")
		return err
	}
	for _, ch := range changes {
		fmt.Fprintln(c.stdout, ch.describe(dry))
	}
	return nil
}
