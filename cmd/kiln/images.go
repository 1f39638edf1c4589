package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func (c *cli) imagesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "images",
		Aliases: []string{"image"},
		Short:   "Manage the images kilnd runs fns from",
	}
	cmd.AddCommand(c.imagesImportCmd(), c.imagesListCmd(), c.imagesPullCmd(), c.imagesRemoveCmd())
	return cmd
}

func (c *cli) imagesImportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE",
		Short: "Upload an OCI or docker image archive (tar) to kilnd",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			names, raw, err := c.importArchive(cmd.Context(), cl, args[0])
			if err != nil {
				return err
			}
			return c.showImported(names, raw)
		},
	}
}

// importArchive streams a tar to kilnd with progress on stderr and returns
// the names of the images it now has.
func (c *cli) importArchive(ctx context.Context, cl *client, path string) ([]string, []byte, error) {
	return c.importArchiveAs(ctx, cl, path, filepath.Base(path))
}

// importArchiveAs is importArchive with the progress line's label.
func (c *cli) importArchiveAs(ctx context.Context, cl *client, path, label string) ([]string, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	bar := newProgressBar(c.stderr, "importing "+label)
	bar.expect(fi.Size())
	raw, err := cl.do(ctx, request{
		Method:        http.MethodPost,
		Path:          "/v2/images/import",
		Header:        http.Header{"Content-Type": {"application/x-tar"}},
		Body:          bar.reader(f),
		ContentLength: fi.Size(),
	})
	bar.done()
	bar.finish()
	if err != nil {
		return nil, nil, err
	}
	var ans struct {
		Images []json.RawMessage `json:"images"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, raw, fmt.Errorf("decoding import answer: %w", err)
	}
	names := make([]string, 0, len(ans.Images))
	for _, im := range ans.Images {
		// kilnd answers names; accept objects too, so a richer answer
		// later does not break older CLIs.
		var name string
		if json.Unmarshal(im, &name) != nil {
			var obj imageResource
			if json.Unmarshal(im, &obj) == nil {
				name = obj.Name
			}
		}
		if name != "" {
			names = append(names, name)
		}
	}
	return names, raw, nil
}

func (c *cli) showImported(names []string, raw []byte) error {
	if c.structured() {
		return c.printRaw(raw)
	}
	if len(names) == 0 {
		fmt.Fprintln(c.stderr, "kiln: the archive held no named images")
	}
	for _, n := range names {
		fmt.Fprintf(c.stdout, "imported %s\n", n)
	}
	return nil
}

func (c *cli) imagesListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			imgs, raw, err := listInto[imageResource](cmd.Context(), cl, "/v2/images", nil)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printItems(raw)
			}
			rows := make([][]string, 0, len(imgs))
			for _, im := range imgs {
				rows = append(rows, []string{im.Name, orDash(im.Digest), fmtBytes(im.Size)})
			}
			return printTable(c.stdout, []string{"NAME", "DIGEST", "SIZE"}, rows)
		},
	}
}

func (c *cli) imagesPullCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "Have kilnd pull an image from a registry",
		Long: "Have kilnd pull an image from a registry, with progress on stderr. kilnd reads\n" +
			"registry credentials from its docker config.json and speaks plain HTTP only to\n" +
			"the registries in its --insecure-registries.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			res, err := c.pull(cmd.Context(), cl, args[0])
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printValue(res)
			}
			name := res.Image
			if name == "" {
				name = args[0]
			}
			if res.Digest != "" {
				fmt.Fprintf(c.stdout, "pulled %s %s\n", name, res.Digest)
			} else {
				fmt.Fprintf(c.stdout, "pulled %s\n", name)
			}
			return nil
		},
	}
}

// pullResult is kilnd's final answer to a pull.
type pullResult struct {
	Image  string `json:"image"`
	Digest string `json:"digest"`
}

// pullLine is one line of a streamed pull: progress, the result, or an
// error that happened after the stream began.
type pullLine struct {
	pullProgressLine
	pullResult
	Message string `json:"message"`
	Code    int    `json:"code"`
	// Name is what kilnd answered before it streamed; kept so an older
	// kilnd's {"name","digest"} still shows a name.
	Name string `json:"name"`
}

type pullProgressLine struct {
	Status      string `json:"status"`
	LayersDone  int    `json:"layers_done"`
	LayersTotal int    `json:"layers_total"`
	Bytes       int64  `json:"bytes"`
	Total       int64  `json:"total"`
}

// pull asks kilnd to pull ref, drawing its progress stream on stderr.
func (c *cli) pull(ctx context.Context, cl *client, ref string) (pullResult, error) {
	body, err := json.Marshal(map[string]string{"ref": ref})
	if err != nil {
		return pullResult{}, err
	}
	resp, err := cl.send(ctx, request{
		Method:        http.MethodPost,
		Path:          "/v2/images/pull",
		Header:        http.Header{"Content-Type": {"application/json"}, "Accept": {ndjson + ", application/json"}},
		Body:          bytes.NewReader(body),
		ContentLength: int64(len(body)),
	})
	if err != nil {
		return pullResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return pullResult{}, errorFromBody(resp.StatusCode, b)
	}
	bar := newProgressBar(c.stderr, "pulling "+ref)
	defer bar.finish()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var res pullResult
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l pullLine
		if err := json.Unmarshal(line, &l); err != nil {
			return pullResult{}, fmt.Errorf("decoding pull answer %q: %w", clip(string(line)), err)
		}
		switch {
		case l.Message != "" && l.Code != 0:
			bar.finish()
			return pullResult{}, &apiError{Status: l.Code, Message: l.Message}
		case l.Status != "":
			p := l.pullProgressLine
			bar.set(progressState{Status: p.Status, Items: p.LayersDone, ItemsTotal: p.LayersTotal, Bytes: p.Bytes, Total: p.Total})
		case l.Image != "" || l.Digest != "" || l.Name != "":
			res = l.pullResult
			if res.Image == "" {
				res.Image = l.Name
			}
		}
	}
	if err := sc.Err(); err != nil {
		return pullResult{}, fmt.Errorf("reading pull answer: %w", err)
	}
	if res.Image == "" && res.Digest == "" {
		return pullResult{}, fmt.Errorf("kilnd ended the pull of %s without a result", ref)
	}
	bar.done()
	return res, nil
}

const ndjson = "application/x-ndjson"

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func (c *cli) imagesRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm REF",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete an image no fn uses",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			// Each segment is escaped on its own: the route takes the
			// rest of the path, slashes included, as the reference.
			parts := strings.Split(args[0], "/")
			for i, p := range parts {
				parts[i] = seg(p)
			}
			raw, err := cl.jsonCall(cmd.Context(), http.MethodDelete, "/v2/images/"+strings.Join(parts, "/"), nil, nil, nil)
			if err != nil {
				return err
			}
			if c.structured() {
				return c.printRaw(raw)
			}
			var ans struct {
				Message string `json:"message"`
			}
			_ = json.Unmarshal(raw, &ans)
			if ans.Message == "" {
				ans.Message = "deleted " + args[0]
			}
			fmt.Fprintln(c.stdout, ans.Message)
			return nil
		},
	}
}
